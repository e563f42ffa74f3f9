"""Summarise py-spy's raw (collapsed) output per thread: samples, and where they landed.

usage: pyspy_summary.py FILE [--rate 200] [--top 12]
Each line of py-spy's `--format raw` is `thread (id): name;frame;frame;... count` (with `--subprocesses`,
preceded by the process: the server's threads and the engine process's are told apart). Per thread this prints the
samples (and seconds at the sampling rate), the leaf frames that took most of them, and the frames of
mlx_router and mlx_lm that were on the stack most often (inclusive). A profile recorded with `--gil` holds
only samples of the thread that held the GIL, so its per-thread seconds say how long each thread held it.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

PROCESS = re.compile(r'process \d+:"[^"]*";')
FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['fn']} ({m['file'].split('site-packages/')[-1]})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    totals: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    with open(a.file) as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            # with --subprocesses, each stack starts with its process (the server, then the engine it spawned)
            procs = PROCESS.findall(stack)
            frames = PROCESS.sub("", stack).split(";")
            thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
            if procs:
                kind = "server" if "multiprocessing" not in procs[-1] else "engine"
                thread = ("tracker" if "resource_tracker" in procs[-1] else kind) + ": " + thread
            if thread.startswith("AnyIO worker") or re.search(r"_\d+$", thread):
                thread = re.sub(r"_\d+$", "", thread) + " (pool)"
            totals[thread] += n
            leaves[thread][short(frames[-1]) if len(frames) > 1 else "(no Python frame)"] += n
            seen = {short(fr) for fr in frames[1:] if "mlx_router/" in fr or "mlx_lm/" in fr}
            for fr in seen:
                inclusive[thread][fr] += n
    for thread, n in totals.most_common():
        print(f"== {thread}: {n} samples ({n / a.rate:.2f} s)")
        for frame, k in leaves[thread].most_common(a.top):
            print(f"   leaf {100 * k / n:5.1f}%  {frame}")
        for frame, k in inclusive[thread].most_common(a.top):
            print(f"   incl {100 * k / n:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
