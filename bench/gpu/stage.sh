#!/usr/bin/env bash
# One stage of a GPU session, each a separate device call (a call may run at most 10 minutes; the machine stays
# warm 30 s between calls, so they follow each other at once). Results and logs go to $OUT.
#   copy   : keep the first half of mlx-cuda-13 (carried alone: a call carries at most 64 MiB)
#   setup  : install the wheels, build both models
#   raw8b  : raw mlx-lm on the 8B
#   router8b / small : mlx-router on the 8B; raw mlx-lm, model-level diagnostics and mlx-router on the 0.5B
#   servers: mlx_lm.server on both models
#   firstuse: which kernels compile on first use, with the warm-up, on a fresh and a reused kernel cache (8B)
#   verify : raw mlx-lm and mlx-router at 1 and 8 streams only (after setup, which it can replace: `setup-8b`)
#   diag   : model-level diagnostics of the 8B (attention paths, quantized-layer choices), if time is left
# A full run of both models (about 18 minutes of a held machine, from 2026-12-01's timings): copy, prep (267 s),
# r05 (211 s), r05b (68 s), r05g, raw8b-all, r8b, srv8b. Run 3 on the H200: copy, prep, s05, raw8b-all, t8b,
# srv8b (the router with one log line per batch step, read by bench/trace.py).
# Run 4 (about 19 minutes of held machines): copy, s4a, s4b, s4c; then copy, s4d on a fresh machine.
# Run 6 (28 minutes of held machines): copy, s6a (524 s), s6b (200 s), s6e (130 s); then copy, s6f (324 s) on a
# fresh machine (s6f's fused projections are in commit e2e6e96, reverted since: check it out to run s6f).
# Vision (issue 15; not run yet): copy, setup-8b (installs the usual wheels), vprep (carry .whl/vision: mlx-vlm's
# wheels, bench/gpu/vision-wheels.txt; builds the random Qwen2.5-VL-7B), vis7b (the benchmark). See
# /work/notes/vision-bench.md for the exact calls.
# Two GPUs (issue 19; not run yet: needs the device kind nvidia-h200-x2): copy, d2prep, then d2one 70b, d2two 70b,
# d2one 8b, d2two 8b (each its own call); the prediction they check is in bench/RESULTS.md.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
# One kernel cache for every program of the session (raw mlx-lm, mlx_lm.server, mlx-router): a kernel one of
# them compiled is not compiled again by the next, which saves minutes of a fresh machine's time and changes
# no steady-state figure (each step warms its own shapes before it measures).
export MLX_PTX_CACHE_DIR=/tmp/kc
B="python3 bench/run_bench.py"
case "$1" in
  copy) mkdir -p /tmp/w && cp .whl/cuda13.part.aa /tmp/w/ && ls -la /tmp/w ;;
  setup)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh || exit 1
    bash bench/gpu/models.sh 8b 0.5b > /dev/null || exit 1 ;;
  setup05)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1 ;;
  full05)
    # Everything on the 0.5B in one call: raw mlx-lm, mlx_lm.server, mlx-router (with py-spy of every thread and
    # of the GIL's holder at 8 and 32 streams) and the runner in process; then the profiles summarised.
    $B /tmp/models/0.5b --name 0.5b --steps raw,mlx_lm_server,router,runner --warm-all --burst 256 \
      --prefix-words 3000 --server-conc 1,8,32 --batches 1,8,32,64 --profile-conc 8,32 --profile-gil-conc 8,32 \
      --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -24
    for f in "$OUT"/0.5b-pyspy*.txt; do echo "# $f"; python3 bench/pyspy_summary.py "$f" --top 8 | grep -v pool; done ;;
  prep)
    # the first call after `copy`: install, build both models, raw mlx-lm on the 0.5B
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    $B /tmp/models/0.5b --name 0.5b --steps raw --out "$OUT/run.jsonl" 2>&1 | tail -7 ;;
  r05)
    # mlx_lm.server and mlx-router on the 0.5B; py-spy of the GIL's holder (server and engine) at 8 streams
    timeout 560 $B /tmp/models/0.5b --name 0.5b --steps mlx_lm_server,router --warm-all --burst 256 \
      --prefix-words 3000 --server-conc 1,8,32 --profile-gil-conc 8 --logs "$OUT" \
      --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -14
    grep -h "quantized layers\|decode step ms\|prefill of\|warmed\|engine ready" "$OUT"/0.5b-router.log
    python3 bench/pyspy_summary.py "$OUT/0.5b-pyspy-gil-8.txt" --top 6 | grep -v "pool\|tracker" ;;
  r05b)
    # the same server with the engine on a thread of its process (engine_process false), and the runner alone
    timeout 300 $B /tmp/models/0.5b --name 0.5b-thread --steps router --conc 8,32 --warm-all --logs "$OUT" \
      --router-defaults '{"engine_process": false}' --out "$OUT/run.jsonl" 2>&1 | tail -4
    timeout 240 $B /tmp/models/0.5b --name 0.5b --steps runner --batches 8,32 --out "$OUT/run.jsonl" 2>&1 | tail -4 ;;
  d2prep)
    # install, build the 8B and Llama-3-70B's shape (about 40 GB at 4 bits)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 8b 70b > /dev/null || exit 1 ;;
  d2one)
    # one GPU: raw mlx-lm and mlx-router on shape $2 (default 70b); $3 picks the steps (default raw,router)
    CUDA_VISIBLE_DEVICES=0 timeout 580 $B /tmp/models/${2:-70b} --name "${2:-70b}-1gpu" --steps "${3:-raw,router}" \
      --conc 1,8,32,64 --batches 1,8,32,64 --warm-all --out "$OUT/run.jsonl" 2>&1 | tail -12 ;;
  d2two)
    # two GPUs over NCCL: mlx-router as one process and as two ranks (greedy answers compared first), raw
    # sharded_load + stream_generate on one rank and two, and the cost of the group's own rounds
    export NCCL_NVLS_ENABLE=0
    timeout 580 python3 bench/dist_bench.py /tmp/models/${2:-70b} --backend nccl --conc 1,8,32,64 \
      --out "$OUT/dist.jsonl" 2>&1 | cut -c1-400 | tail -16 ;;
  v8b)
    # the 8B at 1 and 8 streams, raw mlx-lm beside mlx-router (prefill threshold fixed at the value timed in
    # runs 5 and 6, to spare the calibration's minutes of first-use compiles; the decode choice is timed)
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    $B /tmp/models/8b --name 8b --steps raw --batches 1,8 --out "$OUT/run.jsonl" 2>&1 | tail -3
    timeout 420 $B /tmp/models/8b --name 8b --steps router --conc 1,8 --batches 1,8 --max-running 8 \
      --prefix-words 3000 --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 256}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -5
    grep -h "quantized layers\|decode step ms\|prefill of\|warmed" "$OUT"/8b-router.log ;;
  r05g)
    # the 0.5B server again with newcomers gathered for 20 ms (prefill_gather_ms), beside r05's figures
    timeout 300 $B /tmp/models/0.5b --name 0.5b-gather --steps router --conc 8,32,64 --warm-all --logs "$OUT" \
      --router-defaults '{"prefill_gather_ms": 20}' --out "$OUT/run.jsonl" 2>&1 | tail -5 ;;
  s05)
    # mlx_lm.server and mlx-router on the 0.5B, the router logging every batch step; the router again with
    # newcomers gathered for 20 ms; the runner in process with mlx-lm's layers and with the one-matrix decode
    timeout 330 $B /tmp/models/0.5b --name 0.5b --steps mlx_lm_server,router --warm-all --burst 256 \
      --prefix-words 3000 --server-conc 1,8,32 --router-log-level debug --logs "$OUT" --out "$OUT/run.jsonl" 2>&1 | tail -12
    grep -h "quantized layers\|decode step ms\|prefill of\|warmed" "$OUT"/0.5b-router.log
    timeout 150 $B /tmp/models/0.5b --name 0.5b-gather --steps router --conc 8,32,64 --warm-all --logs "$OUT" \
      --router-log-level debug --router-defaults '{"prefill_gather_ms": 20}' --out "$OUT/run.jsonl" 2>&1 | tail -4
    for v in "-1 0" "0 32"; do
      set -- $v
      timeout 100 python3 bench/runner_bench.py /tmp/models/0.5b 256 8,32,64 --dense-rows $1 --flat-decode $2 2>&1 \
        | grep -v "^\[" | tee -a "$OUT/runner05.txt"
    done ;;
  prep8b)
    # the first call after `copy` on a machine for the 8B: install, build the 8B, raw mlx-lm on it
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    $B /tmp/models/8b --name 8b --steps raw --out "$OUT/run.jsonl" 2>&1 | tail -8 ;;
  r05fix)
    # the 0.5B again after run 3's fixes: raw mlx-lm and the router in one call, the router's layer choices
    # fixed at what run 3's calibration chose (spares its 92 s of first-use compiles)
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    $B /tmp/models/0.5b --name 0.5b --steps raw --batches 8,32,64 --out "$OUT/run.jsonl" 2>&1 | tail -5
    timeout 300 $B /tmp/models/0.5b --name 0.5b --steps router --warm-all --router-log-level debug --logs "$OUT" \
      --router-defaults '{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}' --out "$OUT/run.jsonl" 2>&1 | tail -6 ;;
  t8b)
    timeout 580 $B /tmp/models/8b --name 8b --steps router --warm-all --burst 256 --burst-max-tokens 32 \
      --prefix-words 3000 --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 256}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -10
    grep -h "quantized layers\|decode step ms\|prefill of\|warmed" "$OUT"/8b-router.log ;;
  s4a)
    # run 4 on a fresh machine: install, build the 0.5B, the decode-step ablation and the solo path
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    L='--dense-rows 0 --flat-decode 32'
    timeout 200 python3 bench/step_ablation.py /tmp/models/0.5b --batch 8 --repeats 3 $L 2>&1 | grep -v "^\[" | tee "$OUT/ablation05.txt"
    timeout 80 python3 bench/runner_bench.py /tmp/models/0.5b 256 1 $L 2>&1 | grep -v "^\[" | tee -a "$OUT/ablation05.txt" ;;
  s4b)
    # run 4: the 8B, raw mlx-lm at 1 and 8, the router at 1 and 8 streams with the burst hold and without it
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    $B /tmp/models/8b --name 8b --steps raw --batches 1,8 --out "$OUT/run.jsonl" 2>&1 | tail -3
    for g in 10 0 10; do
      timeout 150 $B /tmp/models/8b --name 8b-hold$g --steps router --conc 1,8 --batches 1,8 --router-log-level debug \
        --logs "$OUT/g$g" --router-defaults "{\"dense_matmul_min_rows\": 256, \"idle_gather_ms\": $g}" \
        --out "$OUT/run.jsonl" 2>&1 | grep "mlx-router" | tail -2
    done ;;
  s4c)
    # run 4: the 0.5B, raw mlx-lm beside the router (burst hold on) with GPU clocks and per-process CPU sampled
    $B /tmp/models/0.5b --name 0.5b --steps raw --batches 1,8,32,64 --out "$OUT/run.jsonl" 2>&1 | tail -5
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv -lms 250 > "$OUT/smi05.csv" &
    top -b -d 1 -n 200 -w 160 | grep -A7 "^ *PID" > "$OUT/top05.txt" &
    timeout 260 $B /tmp/models/0.5b --name 0.5b --steps router --warm-all --router-log-level debug --logs "$OUT" \
      --router-defaults '{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}' --out "$OUT/run.jsonl" 2>&1 | tail -6
    kill %1 %2 2>/dev/null ;;
  s4d)
    # run 4, a second machine: install, build the 0.5B, the router's 256-stream burst and prefix test
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    timeout 300 $B /tmp/models/0.5b --name 0.5b --steps router --conc 8 --warm-all --burst 256 --prefix-words 3000 \
      --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -8 ;;
  s5a)
    # run 5 on a fresh machine: install, the 0.5B, where a prefix hit's first token goes (in process), then raw
    # mlx-lm and the router at 8 and 32 streams twice in turn (the host's speed drifts), the prefix test each time
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    timeout 90 python3 bench/prefix_steps.py /tmp/models/0.5b --dense-rows 0 --flat-decode 32 2>&1 | grep -v "^\[" | tee "$OUT/prefix05.txt"
    for r in 1 2; do
      timeout 60 $B /tmp/models/0.5b --name 0.5b-r$r --steps raw --batches 8,32 --out "$OUT/run.jsonl" 2>&1 | tail -2
      timeout 120 $B /tmp/models/0.5b --name 0.5b-r$r --steps router --conc 8,32 --warm-all --prefix-words 3000 \
        --router-log-level debug --logs "$OUT/r$r" --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | tail -3
    done ;;
  s5b)
    # run 5: the 8B: where a prefix hit's first token goes, raw mlx-lm at 32 and 64, the router at 32 and 64
    # streams, its 256-stream burst and the prefix test (all with the burst hold)
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    timeout 100 python3 bench/prefix_steps.py /tmp/models/8b --dense-rows 256 2>&1 | grep -v "^\[" | tee "$OUT/prefix8b.txt"
    timeout 100 $B /tmp/models/8b --name 8b --steps raw --batches 32,64 --out "$OUT/run.jsonl" 2>&1 | tail -2
    timeout 300 $B /tmp/models/8b --name 8b --steps router --conc 32,64 --warm-all --burst 256 --burst-max-tokens 32 \
      --prefix-words 3000 --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 256}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -6 ;;
  s5c)
    # run 5, a second machine, after the prefix fixes (prompt text encoded stretch by stretch, no burst hold for a
    # request with little left to prefill): install, the 0.5B, the router's 8 streams and prefix test twice
    # (the first compiles the kernels on this fresh machine), then the prefix hit step by step in process
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    for r in 1 2; do
      timeout 280 $B /tmp/models/0.5b --name 0.5b-c$r --steps router --conc 8 --warm-all --prefix-words 3000 \
        --router-log-level debug --logs "$OUT/c$r" --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | tail -2
    done
    timeout 150 python3 bench/prefix_steps.py /tmp/models/0.5b --dense-rows 0 --flat-decode 32 2>&1 | grep -v "^\[" | tee "$OUT/prefix05.txt" ;;
  s5d)
    # run 5: the 8B on the same machine: the prefix hit step by step, then the router's 1 stream and prefix test
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    timeout 200 python3 bench/prefix_steps.py /tmp/models/8b --dense-rows 256 2>&1 | grep -v "^\[" | tee "$OUT/prefix8b.txt"
    timeout 250 $B /tmp/models/8b --name 8b --steps router --conc 1 --batches 1 --prefix-words 3000 \
      --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 256}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -3 ;;
  s5e)
    # run 5, a third machine: install, the 8B, raw mlx-lm at 32 and 64, the router (this code) at 32 and 64
    # streams and its 256-stream burst (batch sizes 32 and 64 warmed at load)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    timeout 120 $B /tmp/models/8b --name 8b --steps raw --batches 32,64 --out "$OUT/run.jsonl" 2>&1 | tail -2
    timeout 330 $B /tmp/models/8b --name 8b --steps router --conc 32,64 --batches 32,64 --burst 256 --burst-max-tokens 32 \
      --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 256}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -4 ;;
  s5f)
    # a short check on a fresh machine (not run yet: run 5 had no device time left): the seeded 0.5B at 1 stream
    # and the prefix test
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    timeout 200 $B /tmp/models/0.5b --name 0.5b-s --steps router --conc 1 --batches 1 --prefix-words 3000 \
      --router-log-level debug --logs "$OUT" --router-defaults '{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}' \
      --out "$OUT/run.jsonl" 2>&1 | tail -3
    grep -h "cached), solo\|prepared in" "$OUT"/*router.log | tail -4 ;;
  s6a)
    # run 6 on a fresh machine: install, the seeded 0.5B; its decode step at 8 and 32 rows (raw mlx-lm and the
    # runner as the server prepares it) with MLX's CUDA graphs as they come, without graphs, and with more
    # kernels per graph (MLX_MAX_OPS_PER_BUFFER), each setting a process of its own; the runner's fastest
    # setting goes to /tmp/graph_ops for s6b
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    for b in 8 32; do
      for ops in default 0 60 200; do
        case $ops in default) e="" ;; 0) e="MLX_USE_CUDA_GRAPHS=0" ;; *) e="MLX_MAX_OPS_PER_BUFFER=$ops" ;; esac
        t=100; [ ! -f /tmp/kc.warm ] && t=300
        timeout $t env $e python3 bench/step_ablation.py /tmp/models/0.5b --batch $b --repeats 3 \
          --only raw,layers-runner --dense-rows 0 --flat-decode 32 2>&1 | grep "^STEP" | sed "s/^/ops=$ops /" \
          | tee -a "$OUT/graphs05.txt"
        touch /tmp/kc.warm
      done
    done
    python3 bench/graph_pick.py "$OUT/graphs05.txt" | tee /tmp/graph_ops ;;
  s6b)
    # run 6: raw mlx-lm on the 0.5B at 1, 8 and 32; the router with s6a's CUDA graph setting (its engine inherits
    # the variable) at 1, 8 and 32 streams and the prefix test (replies filed with their generated ids); the
    # router with MLX's default graphs at 8 and 32 streams; the chosen setting again at 8 and 32. Run 6 chose
    # MLX's default, so all three routers ran alike.
    ops=$(cat /tmp/graph_ops 2>/dev/null || echo null)
    case $ops in null) GE="X=1" ;; 0) GE="MLX_USE_CUDA_GRAPHS=0" ;; *) GE="MLX_MAX_OPS_PER_BUFFER=$ops" ;; esac
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    timeout 90 $B /tmp/models/0.5b --name 0.5b --steps raw --batches 1,8,32 --out "$OUT/run.jsonl" 2>&1 | tail -4
    env $GE timeout 200 $B /tmp/models/0.5b --name "0.5b-ops$ops" --steps router --conc 1,8,32 --batches 1,8,32 \
      --max-running 32 --prefix-words 3000 --router-log-level debug --logs "$OUT/best" \
      --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | tail -4
    timeout 120 $B /tmp/models/0.5b --name 0.5b-opsdefault --steps router --conc 8,32 --batches 8,32 \
      --max-running 32 --logs "$OUT/default" --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | tail -3
    env $GE timeout 120 $B /tmp/models/0.5b --name "0.5b-ops$ops-again" --steps router --conc 8,32 --batches 8,32 \
      --max-running 32 --logs "$OUT/again" --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | tail -3
    grep -h "cached), solo\|prepared in" "$OUT"/best/*router.log | tail -4 ;;
  s6e)
    # run 6 (after s6b, same machine): raw mlx-lm at 8 and 32 beside the router twice with MLX's CUDA graph
    # cache at 4,000 graphs instead of 400 (in process, all six 8-row runs then stepped at their fast speed)
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    timeout 70 $B /tmp/models/0.5b --name 0.5b --steps raw --batches 8,32 --out "$OUT/run.jsonl" 2>&1 | grep "raw Batch"
    for r in 1 2; do
      MLX_CUDA_GRAPH_CACHE_SIZE=4000 timeout 110 $B /tmp/models/0.5b --name 0.5b-gc4000-$r --steps router \
        --conc 8,32 --batches 8,32 --max-running 32 --router-log-level debug --logs "$OUT/gc$r" \
        --router-defaults "$L05" --out "$OUT/run.jsonl" 2>&1 | grep "mlx-router"
    done ;;
  s7a)
    # run 7 on a fresh machine: install, the seeded 0.5B; bench/step_modes.py splits each decode step (graph
    # building, MLX's recording and launch, the wait for the GPU; host probes beside) for raw mlx-lm, the runner
    # and two compiled variants at 8 rows; then raw and split with a 4,000-graph cache; then 32 rows
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
    cd bench || exit 1
    timeout 300 python3 step_modes.py /tmp/models/0.5b --batch 8 --rounds 6 --json "$OUT/modes8.json" 2>&1 \
      | grep -v "^\[" | tee "$OUT/modes8.txt"
    MLX_CUDA_GRAPH_CACHE_SIZE=4000 timeout 100 python3 step_modes.py /tmp/models/0.5b --batch 8 --rounds 4 \
      --variants raw,split --json "$OUT/modes8-gc.json" 2>&1 | grep -v "^\[" | tee "$OUT/modes8-gc.txt"
    timeout 150 python3 step_modes.py /tmp/models/0.5b --batch 32 --rounds 3 --variants raw,runner,split \
      --json "$OUT/modes32.json" 2>&1 | grep -v "^\[" | tee "$OUT/modes32.txt" ;;
  s7b)
    # run 7, a fresh machine: install, the seeded 0.5B; raw mlx-lm and mlx-router in alternation (run_bench.py
    # --steps pairs), 1, 8 and 32 streams, four rounds, a host probe beside each measurement
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    timeout 540 $B /tmp/models/0.5b --name 0.5b --steps pairs --pairs 4 --conc 1,8,32 --batches 1,8,32 \
      --max-running 32 --router-log-level debug --logs "$OUT" --router-defaults "$L05" --out "$OUT/pairs.jsonl" \
      2>&1 | grep -v '^\$\|^{' | tail -16 ;;
  s7c)
    # run 7, after the warm-up fix: a fresh machine, the 0.5B; pairs at 8 and 32 streams, three rounds; the
    # warm-up's line and any step over a second (run 7's s7b: the first 32-row decode step took 57.7 s)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1
    bash bench/gpu/models.sh 0.5b > /dev/null || exit 1
    L05='{"dense_matmul_min_rows": 0, "flat_decode_min_batch": 32}'
    timeout 480 $B /tmp/models/0.5b --name 0.5b --steps pairs --pairs 3 --conc 8,32 --batches 1,8,32 \
      --max-running 32 --router-log-level debug --logs "$OUT" --router-defaults "$L05" --out "$OUT/pairs.jsonl" \
      2>&1 | grep -v '^\$\|^{' | tail -10
    grep -h "warmed" "$OUT/0.5b-router.log"
    grep -h "step_stats: step" "$OUT/0.5b-router.log" | awk '$7 > 1000' | cut -c1-200 ;;
  vprep)
    # vision, after setup: mlx-vlm and what it imports (.whl/vision, carried in this call), then the random
    # Qwen2.5-VL-7B (its real shape, text 4-bit, the rest bfloat16; seeded), and a check that both load it
    python3 -m pip install -q --no-deps --no-compile --upgrade --target /tmp/site .whl/vision/*.whl || exit 1
    python3 -c "import mlx_vlm.server.app, mlx_vlm.generate, mlx_router.vision.adapter; print('mlx-vlm imports')" || exit 1
    bash bench/gpu/models.sh qwen2_5_vl_7b | tail -3 || exit 1
    du -sh /tmp/models/qwen2_5_vl_7b ;;
  vis7b)
    # vision: one 1024x1024 image per request (1,369 tokens at the processor's own bound, which the router is given
    # too), ~100 text tokens, 64 new tokens: first token at 1 stream (mlx-router, mlx_vlm.server, mlx-vlm's
    # stream_generate), aggregate at 8 and 32 streams (mlx-router alone and beside 8 text streams,
    # mlx_vlm.server, batch_generate; an unmeasured-for-the-figures round 0 takes first-use compiles), the second
    # turn about the same image, engine RSS around a burst of 32
    export HF_HUB_OFFLINE=1
    timeout 570 python3 bench/vision_bench.py /tmp/models/qwen2_5_vl_7b --name qwen2_5_vl_7b --size 1024 \
      --images 1 --rounds 3 --conc 8,32 --text-conc 8 --agg-rounds 2 --agg-warm --burst 32 \
      --memory-systems router,mlx_vlm_server --max-running 48 --warm-batches 1,8,16,32 \
      --router-defaults '{"vision_max_pixels": 12845056, "dense_matmul_min_rows": 256}' --logs "$OUT" \
      --out "$OUT/vision.jsonl" 2>&1 | grep -v '^{' | tail -20
    python3 bench/vision_summary.py "$OUT/vision.jsonl" ;;
  raw8b-all)
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    $B /tmp/models/8b --name 8b --steps raw --out "$OUT/run.jsonl" 2>&1 | tail -8 ;;
  srv8b) $B /tmp/models/8b --name 8b --conc 1,8,32 --steps mlx_lm_server --out "$OUT/run.jsonl" 2>&1 | tail -5 ;;
  r8b)
    timeout 560 $B /tmp/models/8b --name 8b --steps router --warm-all --burst 256 --burst-max-tokens 32 \
      --prefix-words 3000 --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -10
    grep -h "quantized layers\|decode step ms\|prefill of\|warmed" "$OUT"/8b-router.log ;;
  setup-8b)
    tar -xf .whl/rest.tar -C .whl && bash bench/gpu/setup.sh > /dev/null || exit 1 ;;
  diag)
    for layers in plain flat auto; do
      MLX_CUDA_USE_CUDNN_SDPA=0 timeout 150 python3 bench/attention_paths.py /tmp/models/8b --layers $layers \
        --batches 8,32,64 2>&1 | grep -v "^\[" | tee -a "$OUT/paths8b.txt"
    done ;;
  firstuse)
    # A fresh kernel cache (a new machine), then the same cache again (a restarted server).
    rm -rf /tmp/kc && timeout 330 python3 bench/first_use.py /tmp/models/8b /tmp/kc 2>&1 | grep -v "^\[" | tee "$OUT/firstuse8b-cold.txt"
    timeout 200 python3 bench/first_use.py /tmp/models/8b /tmp/kc 2>&1 | grep -v "^\[" | tee "$OUT/firstuse8b-warm.txt" ;;
  verify)
    # A short check of the 1- and 8-stream targets after a change: raw mlx-lm beside mlx-router, two prefill
    # group sizes, dense threshold fixed (the value timed in runs 5 and 6) to skip the calibration.
    bash bench/gpu/models.sh 8b > /dev/null || exit 1
    $B /tmp/models/8b --name 8b --steps raw --batches 1,8 --out "$OUT/run.jsonl" 2>&1 | tail -4
    for pbt in 4096 2048; do
      $B /tmp/models/8b --name 8b --steps router --conc 1,8 --prefix-words $([ $pbt = 4096 ] && echo 3000 || echo 0) \
        --logs "$OUT/pbt$pbt" --out "$OUT/run.jsonl" --router-defaults \
        "{\"dense_matmul_min_rows\": 256, \"warmup_batch_sizes\": [1, 2, 4, 8], \"prefill_batch_tokens\": $pbt}" 2>&1 | tail -5
    done ;;
  raw8b) $B /tmp/models/8b --name 8b --steps raw --out "$OUT/run.jsonl" 2>&1 | tail -8 ;;
  router8b)
    $B /tmp/models/8b --name 8b --steps router,runner --warm-all --burst 256 --burst-max-tokens 32 --prefix-words 3000 \
      --profile-conc 1,32 --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -12 ;;
  small)
    for layers in plain auto; do
      MLX_CUDA_USE_CUDNN_SDPA=0 timeout 90 python3 bench/attention_paths.py /tmp/models/0.5b --layers $layers \
        --batches 8,32,64 2>&1 | grep -v "^\[" | tee -a "$OUT/paths05b.txt"
    done
    $B /tmp/models/0.5b --name 0.5b --steps raw,router,runner --warm-all --burst 256 --prefix-words 3000 \
      --profile-conc 1,64 --logs "$OUT" --router-defaults "${2:-{\}}" --out "$OUT/run.jsonl" 2>&1 | tail -16 ;;
  servers)
    for m in 8b 0.5b; do
      $B /tmp/models/$m --name $m --conc 1,8,32 --steps mlx_lm_server --out "$OUT/run.jsonl" 2>&1 | tail -5
    done ;;
esac
