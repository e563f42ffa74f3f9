"""Small preparation work runs on the event loop; large work on a thread."""

from __future__ import annotations

import asyncio
import threading

from mlx_router.serving.offload import run_sized


def test_small_work_runs_inline_and_large_work_on_a_thread():
    async def run() -> tuple[str, str, str]:
        loop_thread = threading.current_thread().name
        small = await run_sized(10, 100, lambda: threading.current_thread().name)
        large = await run_sized(1000, 100, lambda: threading.current_thread().name)
        return loop_thread, small, large

    loop_thread, small, large = asyncio.run(run())
    assert small == loop_thread
    assert large != loop_thread


def test_arguments_and_errors_pass_through():
    async def run() -> None:
        assert await run_sized(1, 10, lambda a, b=0: a + b, 2, b=3) == 5
        for chars in (1, 100):
            try:
                await run_sized(chars, 10, int, "not a number")
            except ValueError:
                continue
            raise AssertionError("the error was swallowed")

    asyncio.run(run())
