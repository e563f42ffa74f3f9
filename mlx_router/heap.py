"""Giving the C heap's free pages back to the system (no MLX here: both processes use it).

glibc raises its mmap threshold to the size of the largest block freed (up to 32 MB), so after one large
request the next one's large blocks (a body, its JSON, the rendered prompt, the tokenizer's buffers in a worker
thread's arena) come from the heap, and freeing them gives nothing back: RSS stays at the high-water mark. The
engine's MLX CPU buffers come from malloc too: after an unload a model's tensors stayed in the heap with MLX
reporting 0 in use (MEMORY_PRESSURE.md); `core/loader.free_memory` trims after clearing MLX's cache.
`malloc_trim(0)` releases the free pages of every arena. Elsewhere (macOS) the allocator returns large blocks by
itself and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable


def trim_heap() -> bool:
    """Return the C heap's free pages to the system where the C library is glibc; False elsewhere."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


@functools.cache  # finding libc runs ldconfig: once per process
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn
