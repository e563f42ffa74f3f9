"""One benchmark run on one machine: raw mlx-lm, mlx_lm.server and mlx-router on the same model and prompts.

usage: run_bench.py MODEL_DIR --name NAME [--batches 1,8,32,64] [--conc 1,8,32,64] [--burst 256]
                    [--max-tokens 256] [--skip-mlx-lm-server] [--prefix-words 3000] [--out results.jsonl]
Every line of every step is appended to --out as JSON (with the step and model name); a markdown summary is
printed at the end. Servers run as subprocesses on free ports and are stopped after their step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], timeout: float) -> str:
    print("$", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        print(p.stdout[-2000:], p.stderr[-4000:], flush=True)
    return p.stdout


def kv_line(line: str) -> dict:
    return {k: _num(v) for k, v in re.findall(r"(\w+)=([^\s]+)", line)}


def _num(v: str):
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return v


class Server:
    def __init__(self, cmd: list[str], port: int, log: Path, env: dict | None = None) -> None:
        self.port = port
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env or os.environ.copy())

    def wait_ready(self, path: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def save(a, rows: list[dict], step: str) -> list[dict]:
    """Append rows to --out at once, so a run cut short keeps what it measured."""
    rows = [dict(r, step=step, model=a.name) for r in rows]
    with open(a.out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)
    return rows


def load_lines(
    base: str, model: str, a, label: str, extra: list[str], max_tokens: int | None = None, step: str = "router"
) -> list[dict]:
    """Run load.py; with --conc, one concurrency level per run, each saved as it finishes."""
    if "--conc" in extra:
        at = extra.index("--conc")
        levels, rest = extra[at + 1].split(","), extra[:at] + extra[at + 2 :]
        if len(levels) > 1:
            rows = []
            for c in levels:
                rows += load_lines(base, model, a, label, rest + ["--conc", c], max_tokens, step)
            return rows
    cmd = [
        sys.executable,
        str(HERE / "load.py"),
        base,
        model,
        "--max-tokens",
        str(max_tokens or a.max_tokens),
        "--prompt-words",
        str(a.prompt_words),
        "--label",
        label,
    ] + extra
    out = run(cmd, timeout=3000)
    return save(a, [json.loads(x) for x in out.splitlines() if x.startswith("{")], step)


def step_raw(a) -> list[dict]:
    rows = []
    out = run([sys.executable, str(HERE / "gen_bench.py"), a.model, str(a.max_tokens), str(a.prompt_words)], 1200)
    rows += save(a, [kv_line(x) for x in out.splitlines() if x.startswith("RAW")], "raw_stream_generate")
    out = run(
        [sys.executable, str(HERE / "batch_bench.py"), a.model, str(a.max_tokens), a.batches, str(a.prompt_words)],
        3000,
    )
    rows += save(a, [kv_line(x) for x in out.splitlines() if x.startswith("BATCH")], "raw_batch")
    return rows


def step_runner(a) -> list[dict]:
    """mlx-router's batch runner in process (no HTTP), with mlx-lm's generate_step beside it for 1 stream."""
    cmd = [sys.executable, str(HERE / "runner_bench.py"), a.model, str(a.max_tokens), a.batches, str(a.prompt_words)]
    out = run(cmd, 1800)
    return save(a, [kv_line(x) for x in out.splitlines() if x.startswith("RUNNER")], "runner_in_process")


def step_mlx_lm_server(a, work: Path) -> list[dict]:
    port = free_port()
    srv = Server(
        [sys.executable, "-m", "mlx_lm", "server", "--model", a.model, "--port", str(port)],
        port,
        work / "mlx_lm_server.log",
    )
    try:
        srv.wait_ready("/v1/models")
        base = f"http://127.0.0.1:{port}"
        return load_lines(base, a.model, a, "mlx_lm.server", ["--conc", a.server_conc or a.conc], step="mlx_lm_server")
    finally:
        srv.stop()


@contextmanager
def router_server(a, work: Path) -> Iterator[tuple[Server, str]]:
    """mlx-router on a free port with --router-defaults, its model loaded; (server, base URL)."""
    models = work / "models"
    models.mkdir(exist_ok=True)
    link = models / a.name
    if not link.exists():
        os.symlink(os.path.abspath(a.model), link)
    port = free_port()
    cfg = {
        "defaults": {
            "model_directory": str(models),
            "scan_hf_cache": False,
            "model": a.name,
            "max_running_requests": a.max_running,
            "max_queued_requests": a.max_queued,
            "warmup_tokens": 3,
            # null: the server's own plan (1, 2, 4, ... max_running_requests)
            "warmup_batch_sizes": None if a.warm_all else [int(b) for b in a.batches.split(",")],
            "timeout": 1800,
            **json.loads(a.router_defaults),
        },
        "server": {"port": port, "log_level": a.router_log_level},
    }
    (work / "router.json").write_text(json.dumps(cfg))
    srv = Server(
        [sys.executable, "-m", "mlx_router", "--config", str(work / "router.json"), "--no-demo"],
        port,
        work / "router.log",
    )
    try:
        srv.wait_ready("/health")
        _wait_loaded(port, a.name)
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        srv.stop()
        if a.logs:
            Path(a.logs).mkdir(parents=True, exist_ok=True)
            for f in [work / "router.log", *sorted(work.glob("pyspy-*.txt"))]:
                shutil.copy(f, Path(a.logs) / f"{a.name}-{f.name}")


def step_router(a, work: Path) -> list[dict]:
    rows: list[dict] = []
    with router_server(a, work) as (srv, base):
        rows += load_lines(base, a.name, a, "mlx-router", ["--conc", a.conc, "--ignore-eos"])
        if a.burst:
            rows += load_lines(
                base,
                a.name,
                a,
                f"mlx-router burst ({a.burst_max_tokens} tokens)",
                ["--conc", str(a.burst), "--retry-429", "--ignore-eos"],
                a.burst_max_tokens,
            )
        for conc in [int(c) for c in a.profile_conc.split(",") if c]:
            rows += profiled_load(srv, base, a, work, conc)
        for conc in [int(c) for c in a.profile_gil_conc.split(",") if c]:
            rows += profiled_load(srv, base, a, work, conc, gil=True)
        if a.prefix_words:
            rows += load_lines(
                base,
                a.name,
                a,
                "mlx-router prefix",
                ["--prefix-turns", "--prefix-words", str(a.prefix_words)],
            )
    return rows


def step_pairs(a, work: Path) -> list[dict]:
    """Raw mlx-lm and mlx-router in alternation, `--pairs` rounds over `--conc`.

    1 stream pairs `stream_generate` with one streamed request; B streams pair `BatchGenerator` at batch B
    with B concurrent streams. Raw runs in a fresh process each time (its first-use compiles happen in an
    unmeasured warm-up call); the router keeps running between its turns, as a server does. On a host whose
    CPUs change speed from one second to the next (the GPU machines: bench/RESULTS.md, run 7), a ratio of two
    measurements taken apart is a draw of two speeds; pairs taken back to back, several times, show the spread."""
    rows: list[dict] = []
    levels = [int(c) for c in a.conc.split(",")]
    with router_server(a, work) as (_, base):
        for r in range(1, a.pairs + 1):
            for c in levels:
                script, tag = ("gen_bench.py", "RAW") if c == 1 else ("batch_bench.py", "BATCH")
                cmd = [sys.executable, str(HERE / script), a.model, str(a.max_tokens)] + ([] if c == 1 else [str(c)])
                out = run(cmd + [str(a.prompt_words)], 600)
                raw = [kv_line(x) for x in out.splitlines() if x.startswith(tag)]
                got = load_lines(base, a.name, a, "mlx-router", ["--conc", str(c), "--ignore-eos"], step="pair_load")
                if raw and got:
                    rows += save(a, [pair_row(r, c, raw[0], got[0])], "pair")
    return rows


def pair_row(r: int, c: int, raw: dict, router: dict) -> dict:
    """One pair's figures: the router's rate over raw's decode rate and over raw's whole call (1 stream: the
    stream's rate against `stream_generate`'s; B streams: the aggregate against `BatchGenerator`'s)."""
    decode = float(raw.get("gen_tps") or 0)
    whole = decode if c == 1 else float(raw.get("e2e_tps") or 0)
    rate = float(router.get("stream_tok_s_p50" if c == 1 else "agg_tok_s") or 0)
    return {
        "pair": r,
        "conc": c,
        "raw_tps": decode,
        "raw_e2e_tps": whole,
        "router_tps": rate,
        "router_ttft_p50_ms": router.get("ttft_p50_ms"),
        "errors": router.get("errors"),
        "ratio": round(rate / decode, 3) if decode else None,
        "ratio_e2e": round(rate / whole, 3) if whole else None,
    }


def profiled_load(srv: Server, base: str, a, work: Path, conc: int, gil: bool = False) -> list[dict]:
    """One more load at `conc` streams with py-spy sampling every thread of the server (idle ones too), or,
    with `gil`, only the thread holding the GIL at each sample (how long each thread held it)."""
    spy_bin = shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")
    out = work / (f"pyspy-gil-{conc}.txt" if gil else f"pyspy-{conc}.txt")
    cmd = [spy_bin, "record", "--pid", str(srv.proc.pid), "--rate", "200", "--threads", "--subprocesses"]
    cmd += ["--nonblocking", "--gil"] if gil else ["--nonblocking", "--idle"]
    cmd += ["--format", "raw", "-o", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1)
    try:
        label = f"mlx-router under py-spy{' --gil' if gil else ''} ({conc} streams)"
        return load_lines(base, a.name, a, label, ["--conc", str(conc), "--ignore-eos"])
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()


def _wait_loaded(port: int, name: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).json()["models"]
        if any(m["id"] == name and m["state"] == "ready" for m in models):
            return
        time.sleep(0.5)
    raise RuntimeError("model did not load")


def summary(rows: list[dict]) -> str:
    lines = [
        "| step | conc/B | TTFT p50 ms | TTFT max ms | stream tok/s | agg tok/s | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["step"] == "raw_stream_generate":
            lines.append(
                f"| raw stream_generate | 1 | prefill {r.get('prompt_tps')} tok/s | | {r.get('gen_tps')} | | |"
            )
        elif r["step"] == "raw_batch":
            lines.append(f"| raw BatchGenerator | {r.get('B')} | | | | {r.get('gen_tps')} | |")
        elif r["step"] == "runner_in_process":
            lines.append(
                f"| runner in process (raw generate_step {r.get('raw_tps', '')}) | {r.get('B')} | {r.get('ttft_ms')} | "
                f"| {r.get('tps')} | {r.get('e2e_tps')} | |"
            )
        elif r["step"] == "pair":
            lines.append(
                f"| pair {r['pair']}: raw {r['raw_tps']} (whole call {r['raw_e2e_tps']}), then mlx-router "
                f"| {r['conc']} | {r['router_ttft_p50_ms']} | | | "
                f"{r['router_tps']} = {r['ratio']} ({r['ratio_e2e']}) | {r['errors']} |"
            )
        elif "turn1_ttft_ms" in r:
            lines.append(
                f"| {r['label']} ({r['prefix_words']} words) | turn1 {r['turn1_ttft_ms']} ms | "
                f"turn2 {r['turn2_ttft_ms']} ms | ratio {r['ratio']} | | | |"
            )
        else:
            lines.append(
                f"| {r.get('label')} | {r.get('conc')} | {r.get('ttft_p50_ms')} | {r.get('ttft_max_ms')} | "
                f"{r.get('stream_tok_s_p50')} | {r.get('agg_tok_s')} | {r.get('errors')} "
                f"{r.get('error_kinds') or ''} retried={r.get('retried_429', 0)} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--name", required=True)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--conc", default="1,8,32,64")
    ap.add_argument("--burst", type=int, default=0)
    ap.add_argument("--burst-max-tokens", type=int, default=64)
    ap.add_argument("--server-conc", default="", help="concurrency levels for mlx_lm.server (default: --conc)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--prompt-words", type=int, default=155, help="~270 tokens with the chat template")
    ap.add_argument("--prefix-words", type=int, default=0)
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--max-queued", type=int, default=256)
    ap.add_argument("--steps", default="raw,mlx_lm_server,router", help="any of raw,mlx_lm_server,router,runner,pairs")
    ap.add_argument("--pairs", type=int, default=4, help="rounds of the pairs step (raw, then router, per level)")
    ap.add_argument("--warm-all", action="store_true", help="warm batch sizes 1, 2, 4, ... --max-running at load")
    ap.add_argument("--out", default="bench_results.jsonl")
    ap.add_argument("--router-defaults", default="{}", help="JSON merged into the router's `defaults`")
    ap.add_argument("--profile-conc", default="", help="concurrency levels loaded once more under py-spy (1,32)")
    ap.add_argument("--profile-gil-conc", default="", help="the same with py-spy --gil (who holds the GIL)")
    ap.add_argument("--router-log-level", default="info", help="debug: one line per batch step (bench/trace.py)")
    ap.add_argument("--logs", default="", help="copy the router's log (and py-spy's output) into this folder")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    rows: list[dict] = []
    steps = a.steps.split(",")
    if "raw" in steps:
        rows += step_raw(a)
    if "mlx_lm_server" in steps:
        rows += step_mlx_lm_server(a, work)
    if "router" in steps:
        rows += step_router(a, work)
    if "runner" in steps:
        rows += step_runner(a)
    if "pairs" in steps:
        rows += step_pairs(a, work)
    print(f"\n## {a.name} ({a.model})\n" + summary(rows), flush=True)
    print(f"logs in {work}", flush=True)


if __name__ == "__main__":
    main()
