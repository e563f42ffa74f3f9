"""Reads step_ablation.py's STEP lines prefixed `ops=SETTING` (bench/gpu/stage.sh s6a) and prints the CUDA graph
setting under which the server's runner stepped fastest: `null` (MLX's default), 0 (no graphs:
MLX_USE_CUDA_GRAPHS=0) or a number of kernels per graph (MLX_MAX_OPS_PER_BUFFER). The score of a setting is its
median step time over MLX's default's, averaged over the batch sizes measured (a setting must beat the default
by 3%); a table of every setting goes to stderr.

usage: graph_pick.py graphs.txt
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict

MARGIN = 0.97


def main() -> None:
    steps: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for line in open(sys.argv[1]):
        m = re.match(r"ops=(\S+) STEP (\S+) B=(\d+) .*decode_p50=([\d.]+)", line)
        if m:
            steps[(m[1], m[2], int(m[3]))].append(float(m[4]))
    settings = sorted({k[0] for k in steps})
    batches = sorted({k[2] for k in steps})
    scores = {}
    for ops in settings:
        ratios = []
        for b in batches:
            base, mine = steps.get(("default", "layers-runner", b)), steps.get((ops, "layers-runner", b))
            if base and mine:
                ratios.append(statistics.median(mine) / statistics.median(base))
        if len(ratios) == len(batches):
            scores[ops] = statistics.mean(ratios)
        cells = [
            f"B={b} raw {statistics.median(steps[(ops, 'raw', b)]):.2f} runner "
            f"{statistics.median(steps[(ops, 'layers-runner', b)]):.2f}"
            for b in batches
            if steps.get((ops, "raw", b)) and steps.get((ops, "layers-runner", b))
        ]
        score = f" | score {scores[ops]:.3f}" if ops in scores else ""
        print(f"ops={ops}: " + " | ".join(cells) + score, file=sys.stderr)
    best = min(scores, key=lambda k: scores[k]) if scores else "default"
    # MLX's default stands unless another setting is clearly faster (the host's speed drifts a few percent)
    print("null" if best == "default" or scores[best] > MARGIN else best)


if __name__ == "__main__":
    main()
