#!/usr/bin/env bash
# One stage of a GPU session, each a separate device call (a call may run at most 10 minutes; the machine stays
# warm 30 s between calls, so they follow each other at once). Results and logs go to $OUT.
#   copy   : keep the first half of mlx-cuda-13 (carried alone: a call carries at most 64 MiB)
#   setup  : install the wheels, build the 8B model, the kernel diagnostics, cuDNN attention on
#   paths  : the same diagnostics with cuDNN attention off, without and with dense_matmul_min_rows; raw 8B
#   router8b / small : mlx-router on the 8B; everything on the 0.5B
#   servers: mlx_lm.server on both models
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
B="python3 bench/run_bench.py"
case "$1" in
  copy) mkdir -p /tmp/w && cp .whl/cuda13.part.aa /tmp/w/ && ls -la /tmp/w ;;
  setup)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh || exit 1
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    timeout 100 python3 bench/qmm_paths.py --shape 8b --rows 1,8,16,32,64,270,512 2>&1 | tee "$OUT/qmm8b.txt"
    MLX_CUDA_USE_CUDNN_SDPA=1 timeout 200 python3 bench/attention_paths.py /tmp/models/8b --batches 8,32,64 \
      2>&1 | tee "$OUT/paths8b.txt" ;;
  paths)
    for d in 0 16; do
      MLX_CUDA_USE_CUDNN_SDPA=0 timeout 120 python3 bench/attention_paths.py /tmp/models/8b --dense-rows $d \
        --batches 8,32,64 2>&1 | tee -a "$OUT/paths8b.txt"
    done
    $B /tmp/models/8b --name 8b --steps raw --out "$OUT/run.jsonl" 2>&1 | tail -8 ;;
  router8b)
    $B /tmp/models/8b --name 8b --steps router --warm-all --burst 256 --burst-max-tokens 32 --prefix-words 3000 \
      --profile-conc 32 --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -12 ;;
  small)
    bash bench/gpu/models.sh 0.5b > /dev/null
    timeout 60 python3 bench/qmm_paths.py --shape 0.5b --rows 1,16,64,270 2>&1 | tee "$OUT/qmm05b.txt"
    $B /tmp/models/0.5b --name 0.5b --steps raw,router --warm-all --burst 256 --prefix-words 3000 \
      --profile-conc 64 --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -16 ;;
  servers)
    for m in 8b 0.5b; do
      $B /tmp/models/$m --name $m --conc 1,8,32 --steps mlx_lm_server --out "$OUT/run.jsonl" 2>&1 | tail -5
    done ;;
esac
