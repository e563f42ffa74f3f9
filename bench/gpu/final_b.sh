#!/usr/bin/env bash
# Second call of a GPU run: install, build both models, diagnose first-use costs, then the 8B benchmark.
set -euo pipefail
bash bench/gpu/setup.sh
export PYTHONPATH=/tmp/site:$PWD
bash bench/gpu/models.sh 0.5b 8b > /dev/null
python3 bench/prefill_shapes.py /tmp/models/8b --lengths 300,311,322,345 --batches 1,2,3,4,5,6,7,8,9,10 \
  | tee "$OUT/diag8b.txt"
python3 bench/run_bench.py /tmp/models/8b --name 8b --batches 1,8,32,64 --conc 1,8,32,64 --burst 256 \
  --burst-max-tokens 32 --prefix-words 3000 --steps raw,router --warm-all --out "$OUT/final.jsonl" 2>&1 | tail -16
grep -hiE "error|Traceback" /tmp/bench-*/router.log | head -5 || true
