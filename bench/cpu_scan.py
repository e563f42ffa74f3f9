"""How fast each CPU of this machine runs Python, and whether that changes from one second to the next.

usage: cpu_scan.py [SECONDS] [--busy N]
Every 2 s this thread moves to each CPU it may use in turn and times a fixed pure-Python loop there (the
median of 15 runs, in microseconds). A host-bound decode step (a small model on a fast GPU) runs at its
thread's speed, and that speed changed 1.5-1.7x between runs on the GPU machines (bench/RESULTS.md, run 7):
if some CPUs are slow and others not, an engine pinned to a fast one would not be drawn at random.
`--busy N` keeps N other processes spinning meanwhile, as a server's other threads would.
Prints one line per CPU: its medians over time, then a summary.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time


def loop_us() -> float:
    t = time.perf_counter()
    s = 0
    for i in range(2000):
        s += i * i
    return 1e6 * (time.perf_counter() - t)


def spin() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seconds", type=float, nargs="?", default=40)
    ap.add_argument("--busy", type=int, default=0)
    a = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(a.busy)]
    for p in busy:
        p.start()
    rows: dict[int, list[float]] = {c: [] for c in cpus}
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        for c in cpus:
            os.sched_setaffinity(0, {c})
            loop_us()
            rows[c].append(statistics.median(loop_us() for _ in range(15)))
        time.sleep(2)
    for p in busy:
        p.terminate()
    for c, v in rows.items():
        print(f"cpu {c:3d}: " + " ".join(f"{x:.0f}" for x in v), flush=True)
    firsts = [v[0] for v in rows.values()]
    spread = [max(v) / min(v) for v in rows.values()]
    print(
        f"rounds={len(rows[cpus[0]])} fastest cpu {min(firsts):.0f} us, slowest {max(firsts):.0f} us "
        f"in round 1; per-cpu max/min over time: median {statistics.median(spread):.2f}, max {max(spread):.2f}"
    )


if __name__ == "__main__":
    main()
