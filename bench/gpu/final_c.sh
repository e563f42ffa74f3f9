#!/usr/bin/env bash
# Third call: the 0.5B benchmark, then mlx_lm.server on both models, on the same warm machine.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD
python3 bench/run_bench.py /tmp/models/0.5b --name 0.5b --batches 1,8,32,64 --conc 1,8,32,64 --burst 256 \
  --prefix-words 3000 --steps raw,router --warm-all --out "$OUT/final.jsonl" 2>&1 | tail -14
for m in 0.5b 8b; do
  python3 bench/run_bench.py /tmp/models/$m --name $m --conc 1,8 --steps mlx_lm_server --out "$OUT/final.jsonl" \
    2>&1 | tail -4
done
