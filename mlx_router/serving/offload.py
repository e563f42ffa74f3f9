"""Request preparation work (template rendering, tokenizing) on the event loop or on a thread, by its size.

A thread hop costs more than a normal prompt's work: rendering and encoding a 1,000-character prompt takes
under half a millisecond (2-core CPU), while under a burst each hop waits for the GIL behind the event loop and
the other requests' hops: on the H200 host, 32 requests arriving together took up to 310 ms to be prepared with
two hops each (bench/RESULTS.md, run 3). Large inputs still go to a thread so the event loop never stalls on one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INLINE_ENCODE_CHARS = 8_000  # about 1.7 ms of encoding on the 2-core CPU
INLINE_RENDER_CHARS = 64_000  # rendering costs a small fraction of encoding the text it makes


async def run_sized(chars: int, limit: int, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """`fn(*args, **kwargs)` inline when its input is at most `limit` characters, else on a worker thread."""
    if chars <= limit:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
