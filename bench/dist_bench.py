"""Distributed serving on one machine: two ranks (ring backend over 127.0.0.1) against one process.

usage: dist_bench.py MODEL_DIR [--conc 1,8] [--max-tokens 256] [--rounds 2000] [--backend ring|nccl] [--out F]
       MLX_RANK=R MLX_HOSTFILE=F dist_bench.py --rank-worker [--rounds 2000]   (on each machine of a real group)

Correctness first: a few greedy answers of the group must equal the single process's, or the run stops. Then
`load.py` streams the same load through both (ignore_eos, distinct prompts per level), and the per-decode-step
time is 1000 / a stream's decode tok/s (every running stream gets one token a step). For scale, raw mlx-lm's
`stream_generate` on 1 and on 2 ranks (`sharded_load`) of the same model: what the sharded model costs without
any server. Last, the cost of the group's own traffic: `--rounds` empty rounds (one all_sum of two integers) and
rounds carrying a 1 kB command, timed on two ranks of this script (`--rank-worker`). The model must split by
tensor parallelism (heads and hidden sizes divisible by 2). Prints one JSON line per figure; `--out` appends
them to a file. `--backend nccl` runs the ranks on this host's first two GPUs (rank r on GPU r, NCCL over
127.0.0.1, NVLink multicast off) instead of a CPU ring: the two-GPU run of issue 19.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROMPTS = ["Tell me about the sea.", "Count to ten, slowly.", "What is a prime number?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hostfile(workdir: Path) -> Path:
    path = workdir / "hosts.json"
    path.write_text(json.dumps([[f"127.0.0.1:{free_port()}"], [f"127.0.0.1:{free_port()}"]]))
    return path


def rank_envs(ranks: int, backend: str, workdir: Path) -> list[dict[str, str]]:
    """Each rank's launch variables, as `mlx.launch` would set them for `backend` (ring or nccl)."""
    if ranks < 2:
        return [{}]
    if backend == "nccl":
        port = str(free_port())
        return [
            {
                "MLX_RANK": str(r),
                "MLX_WORLD_SIZE": str(ranks),
                "NCCL_HOST_IP": "127.0.0.1",
                "NCCL_PORT": port,
                "CUDA_VISIBLE_DEVICES": str(r),
                "NCCL_NVLS_ENABLE": "0",
                "DIST_BACKEND": "nccl",
            }
            for r in range(ranks)
        ]
    hosts = str(hostfile(workdir))
    return [{"MLX_RANK": str(r), "MLX_HOSTFILE": hosts, "DIST_BACKEND": "ring"} for r in range(ranks)]


class Servers:
    """mlx-router as one process, or as rank 0 and rank 1 of a ring on this machine."""

    def __init__(self, model: Path, workdir: Path, ranks: int, backend: str = "ring") -> None:
        self.port = free_port()
        models = workdir / "models"
        models.mkdir(exist_ok=True)
        if not (models / model.name).exists():
            (models / model.name).symlink_to(model.resolve(), target_is_directory=True)
        cfg = {
            "defaults": {"model_directory": str(models), "scan_hf_cache": False, "max_running_requests": 64},
            "server": {"port": self.port},
            "distributed": {"backend": backend},
        }
        self.config = workdir / f"config-{ranks}.json"
        self.config.write_text(json.dumps(cfg))
        self.ranks = ranks
        self.envs = rank_envs(ranks, backend, workdir)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = [workdir / f"ranks{ranks}-rank{r}.log" for r in range(ranks)]

    def __enter__(self) -> Servers:
        for rank in reversed(range(self.ranks)):
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **self.envs[rank])
            cmd = [sys.executable, "-m", "mlx_router", "--config", str(self.config), "--no-demo"]
            with open(self.logs[rank], "wb") as log:
                self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start; see {self.logs[0]}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.procs[-1].terminate()  # rank 0 (started last) stops the group
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def greedy_answers(base: str, model: str) -> list[str]:
    out = []
    for prompt in PROMPTS:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 64}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        r.raise_for_status()
        out.append(r.json()["choices"][0]["message"]["content"])
    return out


def load_rows(base: str, model: str, conc: str, max_tokens: int, label: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, str(HERE / "load.py"), base, model, "--conc", conc, "--max-tokens", str(max_tokens)]
    cmd += ["--ignore-eos", "--label", label]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        rate = row.get("stream_tok_s_p50")
        row["step_ms"] = round(1000 / rate, 3) if rate else None
    return rows


def rounds_rows(rounds: int, workdir: Path, backend: str = "ring") -> list[dict[str, Any]]:
    """Two ranks of this script time the group's own rounds; rank 0 prints the figures."""
    envs = rank_envs(2, backend, workdir)
    procs = []
    for rank in (1, 0):
        env = dict(os.environ, PYTHONPATH=str(REPO), **envs[rank])
        cmd = [sys.executable, __file__, "--rank-worker", "--rounds", str(rounds)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    return [json.loads(line) for line in outs[1].splitlines() if line.startswith("{")]


def raw_rows(model: Path, max_tokens: int, workdir: Path, backend: str = "ring") -> list[dict[str, Any]]:
    """mlx-lm's own stream_generate, one process and two ranks (this script with `--raw-worker`)."""
    rows = []
    for ranks in (1, 2):
        envs = rank_envs(ranks, backend, workdir)
        procs = []
        for rank in reversed(range(ranks)):
            env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **envs[rank])
            cmd = [sys.executable, __file__, str(model), "--raw-worker", "--max-tokens", str(max_tokens)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=300)[0] for p in procs]
        rows += [{**json.loads(line), "label": f"raw mlx-lm, {ranks} rank(s)"} for line in outs[-1].splitlines()]
    return rows


def raw_worker(model: Path, max_tokens: int) -> None:
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.utils import sharded_load

    backend = os.environ.get("DIST_BACKEND", "ring")
    group = mx.distributed.init(backend=backend) if "MLX_RANK" in os.environ else None
    if group is not None and group.size() > 1:
        lm, tok = sharded_load(str(model), tensor_group=group)[:2]  # (model, tokenizer[, config])
    else:
        lm, tok = load(str(model))[:2]
    prompt = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True)
    rates = []
    for _ in range(3):  # the first is a warm-up; the rest's mean is what the row says
        for r in stream_generate(lm, tok, prompt, max_tokens=max_tokens, sampler=make_sampler(temp=0.0)):
            last = r
        rates.append(last.generation_tps)
    if group is None or group.rank() == 0:
        rate = sum(rates[1:]) / len(rates[1:])
        print(json.dumps({"conc": 1, "stream_tok_s_p50": round(rate, 1), "step_ms": round(1000 / rate, 3)}))


def rank_worker(rounds: int) -> None:
    from mlx_router.config.settings import DistributedConfig
    from mlx_router.core.group import join_group

    group = join_group(DistributedConfig(backend=os.environ.get("DIST_BACKEND", "ring")))
    assert group is not None
    command = os.urandom(1024)
    for label, payload in (("empty round", b""), ("round with a 1 kB command", command)):
        for _ in range(50):
            group.broadcast(payload)
        t0 = time.perf_counter()
        for _ in range(rounds):
            group.broadcast(payload)
        us = 1e6 * (time.perf_counter() - t0) / rounds
        if group.leader:
            print(json.dumps({"label": label, "us_per_round": round(us, 1), "rounds": rounds}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--conc", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--out")
    ap.add_argument("--backend", default="ring", choices=["ring", "nccl"], help="nccl: two GPUs of this host")
    ap.add_argument("--rank-worker", action="store_true", help="time the group's rounds as one rank (MLX_RANK set)")
    ap.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank_worker:
        rank_worker(a.rounds)
        return
    if a.raw_worker:
        raw_worker(Path(a.model), a.max_tokens)
        return
    if not a.model:
        ap.error("MODEL_DIR is required")
    model = Path(a.model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        answers: dict[int, list[str]] = {}
        for ranks in (1, 2):
            with Servers(model, work, ranks, a.backend) as srv:
                answers[ranks] = greedy_answers(srv.base, model.name)
                rows += load_rows(srv.base, model.name, a.conc, a.max_tokens, f"{ranks} rank(s)")
        if answers[1] != answers[2]:
            print(json.dumps({"error": "the group's greedy answers differ", "answers": answers}), flush=True)
            sys.exit(1)
        rows.append({"label": "greedy answers equal", "prompts": len(PROMPTS)})
        rows += raw_rows(model, a.max_tokens, work, a.backend)
        rows += rounds_rows(a.rounds, work, a.backend)
    stamp = {"machine": os.uname().machine, "cpus": os.cpu_count(), "model": model.name, "time": time.time()}
    stamp["backend"] = a.backend
    with open(a.out, "a") if a.out else open(os.devnull, "w") as f:
        for row in rows:
            line = json.dumps({**stamp, **row})
            print(line, flush=True)
            f.write(line + "\n")


if __name__ == "__main__":
    main()
