"""Read a router log written with `--log-level debug` (run_bench.py --router-log-level debug): per burst,
how the requests reached the engine, how they were prefilled, and what the decode steps cost.

usage: trace.py ROUTER_LOG [--gap 0.5]
A burst is a run of "added" lines with no gap longer than --gap seconds (warm-up requests are skipped). For
each burst it prints: the requests and how far apart they reached the engine; the HTTP side's preparation
(from the "prepared in" lines); the prefill groups (steps that prefilled prompt tokens) with their sizes and
times; and the median, 10th and 90th percentile of the decode-only steps, by batch size.
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ADDED = re.compile(r"(\S+) added ([\d.-]+) ms after it was received")
STEP = re.compile(
    r"step \d+: ([\d.]+) ms: decode (\d+) rows ([\d.]+) ms, prefill (\d+) tokens ([\d.]+) ms \((\d+) prompts done\)"
)
PREPARED = re.compile(r"(\S+): prepared in (\d+) ms")


@dataclass
class Burst:
    start: float
    end: float
    added: list[tuple[float, str, float]] = field(default_factory=list)  # (time, request, ms after received)
    steps: list[tuple[float, float, int, int, float]] = field(default_factory=list)  # time, ms, rows, tokens, ms


def _time(line: str) -> float | None:
    m = STAMP.match(line)
    if not m:
        return None
    return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def read(path: str, gap: float) -> tuple[list[Burst], dict[str, int]]:
    bursts: list[Burst] = []
    prepared: dict[str, int] = {}
    steps: list[tuple[float, float, int, int, float]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            t = _time(line)
            if t is None:
                continue
            if (m := ADDED.search(line)) and not m[1].startswith("warmup"):
                if not bursts or t - bursts[-1].end > gap:
                    bursts.append(Burst(t, t))
                bursts[-1].added.append((t, m[1], float(m[2])))
                bursts[-1].end = t
            elif m := STEP.search(line):
                steps.append((t, float(m[1]), int(m[2]), int(m[4]), float(m[5])))
            elif m := PREPARED.search(line):
                prepared[m[1]] = int(m[2])
    for i, b in enumerate(bursts):
        until = bursts[i + 1].start if i + 1 < len(bursts) else float("inf")
        b.steps = [s for s in steps if b.start <= s[0] < until]
    return bursts, prepared


def _spread(values: list[float]) -> str:
    v = sorted(values)
    return f"median {statistics.median(v):.1f}, p10 {v[len(v) // 10]:.1f}, p90 {v[9 * len(v) // 10]:.1f}"


def report(b: Burst, prepared: dict[str, int]) -> str:
    n = len(b.added)
    lines = [f"## {n} request(s) from {datetime.fromtimestamp(b.start):%H:%M:%S.%f}"[:-3]]
    times = [t for t, _, _ in b.added]
    lines.append(
        f"reached the engine over {1000 * (times[-1] - times[0]):.0f} ms; "
        f"ms from received to added: {_spread([ms for _, _, ms in b.added])}"
    )
    prep = [prepared[r] for _, r, _ in b.added if r in prepared]
    if prep:
        lines.append(f"HTTP-side preparation ms: {_spread(prep)}")
    groups = [(ms, tokens, pms) for _, ms, _, tokens, pms in b.steps if tokens]
    if groups:
        sizes = " ".join(f"{tokens}/{pms:.0f}/{ms:.0f}" for ms, tokens, pms in groups)
        lines.append(f"{len(groups)} prefill steps (tokens / prefill ms / step ms): {sizes}")
    by_rows: dict[int, list[float]] = {}
    for _, ms, rows, tokens, _ in b.steps:
        if not tokens and rows:
            by_rows.setdefault(rows, []).append(ms)
    for rows in sorted(by_rows):
        if len(by_rows[rows]) >= 10:
            lines.append(f"decode-only steps of {rows} rows ({len(by_rows[rows])}): ms {_spread(by_rows[rows])}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--gap", type=float, default=0.5, help="seconds without an arrival that end a burst")
    a = ap.parse_args()
    bursts, prepared = read(a.log, a.gap)
    print("\n\n".join(report(b, prepared) for b in bursts))


if __name__ == "__main__":
    main()
