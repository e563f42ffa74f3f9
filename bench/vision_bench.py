"""Images through mlx-router beside mlx-vlm's own server and mlx-vlm in process, on one model in one run.

usage: vision_bench.py MODEL_DIR --name NAME --out FILE.jsonl [--size 448] [--images 1,4] [--conc 8]
                       [--text-conc 8] [--burst 32] [--max-tokens 64] [--prompt-tokens 100] [--steps ...]
Steps (each alternates its systems round by round, since this machine's speed drifts between minutes):
  ttft   one stream, `--images` images per request: time to first token of mlx-router, mlx_vlm.server and
         mlx-vlm's `stream_generate` in a process of its own (its first token: mlx-vlm's own prefill time)
  agg    `--conc` concurrent requests of one image each: aggregate tok/s of mlx-router alone, of mlx-router with
         `--text-conc` text streams beside them, of mlx_vlm.server and of mlx-vlm's `batch_generate`
  turns  a chat's second turn about the same image: its first token over the first turn's (both servers)
  memory the engine's RSS (mlx-router's engine process; mlx_vlm.server's process) before, during and after a
         burst of `--burst` image requests
Every image is new (its own seed), so no image or prefix cache serves a request except the second turn's.
Servers listen on 127.0.0.1 at free ports and are stopped at the end; rows are appended to --out as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from load import WORDS  # noqa: E402
from run_bench import Server, free_port, router_server  # noqa: E402

QUESTION = "What else can you see in the picture?"


def image_png(seed: int, size: int) -> bytes:
    """A PNG of `size` x `size`: coloured blocks of 8 pixels with fine noise on top, different for each seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:size, :size]
    pixels = np.clip(pixels.astype(np.int16) + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def image_uri(seed: int, size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(image_png(seed, size)).decode()


def prompt_text(tok: Any, i: int, tokens: int) -> str:
    """Words of load.py's prompts, as many as make `tokens` tokens with the model's tokenizer."""
    words = [f"Request {i}:"]
    k = 0
    while len(tok.encode(" ".join(words)).ids) < tokens:
        words.append(WORDS[(i + k) % len(WORDS)])
        k += 1
    return " ".join(words)


def user_message(uris: list[str], text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in uris]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


# --- mlx-vlm in process: a worker that owns the model, driven through stdin and stdout -------------------------


def worker_main(model: str) -> None:
    """Answer JSON commands, one a line: `stream` (one request, its first token timed) or `batch`
    (`batch_generate` over one image per prompt)."""
    import mlx.core as mx
    from mlx_vlm import load
    from mlx_vlm.generate import batch_generate, stream_generate
    from mlx_vlm.prompt_utils import apply_chat_template

    loaded: Any = load(model)
    vlm, processor = loaded
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        uris = [image_uri(s, cmd["size"]) for s in cmd["seeds"]]
        if cmd["op"] == "stream":
            prompt: Any = apply_chat_template(processor, vlm.config, cmd["prompts"][0], num_images=len(uris))
            t0 = time.perf_counter()
            first, last = None, None
            for r in stream_generate(vlm, processor, prompt, image=uris, max_tokens=cmd["max_tokens"], temperature=0.0):
                first = first or time.perf_counter() - t0
                last = r
            total = time.perf_counter() - t0
            out = {"ttft_ms": round(1000 * (first or total), 1), "total_ms": round(1000 * total, 1)}
            if last is not None:
                out.update(prompt_tokens=last.prompt_tokens, tokens=last.generation_tokens)
        else:
            t0 = time.perf_counter()
            res = batch_generate(vlm, processor, images=uris, prompts=cmd["prompts"], max_tokens=cmd["max_tokens"])
            wall = time.perf_counter() - t0
            s = res.stats
            out = {
                "wall_s": round(wall, 2),
                "tokens": s.generation_tokens,
                "agg_tok_s": round(s.generation_tokens / wall, 1),
                "prompt_tokens": s.prompt_tokens,
                "prompt_tps": round(s.prompt_tps, 1),
                "decode_tok_s": round(s.generation_tps, 1),
            }
        out["peak_gb"] = round(mx.get_peak_memory() / 1e9, 2)
        print(json.dumps(out), flush=True)


class RawWorker:
    """The worker above in a process of its own, its stderr in a log file."""

    def __init__(self, model: Path, log: Path) -> None:
        self.log = open(log, "wb")
        cmd = [sys.executable, str(Path(__file__).resolve()), str(model), "--worker"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"mlx-vlm worker exited ({self.proc.poll()}); see {self.log.name}")
            if line.startswith("{"):
                return dict(json.loads(line))

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- HTTP ---------------------------------------------------------------------------------------------------


class Http:
    """One OpenAI-compatible server: streamed chat requests, first token and usage read off the stream."""

    def __init__(self, label: str, base: str, model: str, extra: dict[str, Any], pid: int) -> None:
        self.label, self.url, self.model, self.extra, self.pid = label, base + "/v1/chat/completions", model, extra, pid

    def body(self, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra,
        }

    async def chat(self, client: httpx.AsyncClient, messages: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
        """{ttft, total, tokens, prompt_tokens, text}; a 429 waits Retry-After and counts from the first try."""
        start = time.perf_counter()
        body = self.body(messages, max_tokens)
        while True:
            t0 = time.perf_counter()
            async with client.stream("POST", self.url, json=body) as r:
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
                ttft, text = None, []
                usage: dict[str, Any] = {}
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    obj = json.loads(line[5:])
                    if "error" in obj:
                        raise RuntimeError(str(obj["error"])[:300])
                    usage = obj.get("usage") or usage
                    for ch in obj.get("choices", []):
                        piece = (ch.get("delta") or {}).get("content")
                        if piece:
                            text.append(piece)
                            ttft = ttft or time.perf_counter() - t0
            total = time.perf_counter() - t0
            waited = t0 - start
            return {
                "ttft": waited + (ttft or total),
                "total": waited + total,
                "tokens": usage.get("completion_tokens") or len(text),
                "prompt_tokens": usage.get("prompt_tokens"),
                "text": "".join(text),
            }


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=1800, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))


async def burst(srv: Http, requests: list[tuple[list[dict[str, Any]], str]], max_tokens: int) -> dict[str, Any]:
    """All `requests` (messages, kind) at once: aggregate tok/s over the wall time, per kind and in all."""
    async with client() as c:
        t0 = time.perf_counter()
        got = await asyncio.gather(*(srv.chat(c, m, max_tokens) for m, _ in requests), return_exceptions=True)
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": round(wall, 2)}
    errors = [f"{type(g).__name__}: {g}"[:200] for g in got if isinstance(g, BaseException)]
    out.update(errors=len(errors), error_kinds=sorted(set(errors))[:3])
    for kind in sorted({k for _, k in requests}) + ["all"]:
        rows = [g for g, (_, k) in zip(got, requests, strict=True) if isinstance(g, dict) and kind in (k, "all")]
        if not rows:
            continue
        ttfts = sorted(r["ttft"] for r in rows)
        tokens = sum(r["tokens"] for r in rows)
        out[kind] = {
            "n": len(rows),
            "tokens": tokens,
            "agg_tok_s": round(tokens / wall, 1),
            "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1),
            "ttft_max_ms": round(1000 * ttfts[-1], 1),
            "prompt_tokens": rows[0]["prompt_tokens"],
        }
    return out


# --- the steps ----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, a: argparse.Namespace, http: dict[str, Http], raw: RawWorker | None) -> None:
        self.a, self.http, self.raw = a, http, raw
        self.seed = 1000  # every request's images get seeds of their own
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(a.model) / "tokenizer.json"))

    def seeds(self, n: int) -> list[int]:
        self.seed += n
        return list(range(self.seed - n, self.seed))

    def prompt(self, i: int) -> str:
        return prompt_text(self.tokenizer, i, self.a.prompt_tokens)

    def save(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row, model=self.a.name, size=self.a.size, max_tokens=self.a.max_tokens)
        row["load1"] = round(os.getloadavg()[0], 1)  # other work on this machine while the row was measured
        with open(self.a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return row

    def one(self, system: str, n_images: int) -> dict[str, Any]:
        seeds, i = self.seeds(n_images), self.seed
        if system == "mlx_vlm_inprocess":
            assert self.raw is not None
            return self.raw.ask(
                op="stream", seeds=seeds, size=self.a.size, prompts=[self.prompt(i)], max_tokens=self.a.max_tokens
            )
        uris = [image_uri(s, self.a.size) for s in seeds]
        r = asyncio.run(self._one(self.http[system], [user_message(uris, self.prompt(i))]))
        return {
            "ttft_ms": round(1000 * r["ttft"], 1),
            "total_ms": round(1000 * r["total"], 1),
            "prompt_tokens": r["prompt_tokens"],
            "tokens": r["tokens"],
        }

    async def _one(self, srv: Http, messages: list[dict[str, Any]]) -> dict[str, Any]:
        async with client() as c:
            return await srv.chat(c, messages, self.a.max_tokens)

    def warm(self) -> None:
        for system in self.systems(("router", "mlx_vlm_server", "mlx_vlm_inprocess")):
            self.one(system, 1)

    def systems(self, wanted: tuple[str, ...]) -> list[str]:
        have = set(self.http) | ({"mlx_vlm_inprocess", "mlx_vlm_batch"} if self.raw else set())
        return [s for s in wanted if s in have]

    def step_ttft(self) -> None:
        for n in [int(x) for x in self.a.images.split(",")]:
            for r in range(1, self.a.rounds + 1):
                for system in self.systems(("router", "mlx_vlm_server", "mlx_vlm_inprocess")):
                    got = self.one(system, n)
                    self.save({"step": "ttft", "system": system, "images": n, "round": r, **got})

    def step_agg(self) -> None:
        a = self.a
        for conc in [int(c) for c in a.conc.split(",")]:
            plan = self.systems(("router", "mlx_vlm_server", "mlx_vlm_batch"))
            if a.text_conc and "router" in plan:
                plan.insert(1, "router+text")
            # round 0 (--agg-warm): first-use work at this batch size (kernel compiles on a GPU), saved but apart
            for r in range(0 if a.agg_warm else 1, a.agg_rounds + 1):
                for system in plan:
                    self.save({"step": "agg", "system": system, "conc": conc, "round": r, **self._agg(system, conc)})

    def _agg(self, system: str, conc: int) -> dict[str, Any]:
        a = self.a
        seeds = self.seeds(conc)
        prompts = [self.prompt(s) for s in seeds]
        if system == "mlx_vlm_batch":
            assert self.raw is not None
            return self.raw.ask(op="batch", seeds=seeds, size=a.size, prompts=prompts, max_tokens=a.max_tokens)
        reqs = [([user_message([image_uri(s, a.size)], p)], "image") for s, p in zip(seeds, prompts, strict=True)]
        if system == "router+text":
            reqs += [([{"role": "user", "content": self.prompt(s + 500_000)}], "text") for s in seeds[: a.text_conc]]
        return asyncio.run(burst(self.http[system.split("+")[0]], reqs, a.max_tokens))

    def step_turns(self) -> None:
        for r in range(1, self.a.rounds + 1):
            for system in self.systems(("router", "mlx_vlm_server")):
                self.save({"step": "turns", "system": system, "round": r, **asyncio.run(self._turns(system))})

    async def _turns(self, system: str) -> dict[str, Any]:
        srv, (seed,) = self.http[system], self.seeds(1)
        history = [user_message([image_uri(seed, self.a.size)], self.prompt(seed))]
        async with client() as c:
            first = await srv.chat(c, history, self.a.max_tokens)
            history += [{"role": "assistant", "content": first["text"]}, {"role": "user", "content": QUESTION}]
            second = await srv.chat(c, history, self.a.max_tokens)
        return {
            "turn1_ttft_ms": round(1000 * first["ttft"], 1),
            "turn2_ttft_ms": round(1000 * second["ttft"], 1),
            "ratio": round(second["ttft"] / first["ttft"], 3),
            "turn1_prompt_tokens": first["prompt_tokens"],
            "turn2_prompt_tokens": second["prompt_tokens"],
        }

    def step_memory(self) -> None:
        """`--bursts` bursts in a row, RSS read before, during and `--settle` s after each. mlx-router keeps
        prompts' KV caches (prefix_cache_gb) and image features (image_cache_gb) by design: its own count of
        them and of MLX's memory (/v1/health) is read beside, so what the process holds beyond MLX's shows."""
        for system in self.systems(tuple(self.a.memory_systems.split(","))):
            srv = self.http[system]
            start, caches0 = rss_mb(srv.pid), self.caches(system)
            for b in range(1, self.a.bursts + 1):
                base = rss_mb(srv.pid)
                seeds = self.seeds(self.a.burst)
                reqs = [([user_message([image_uri(s, self.a.size)], self.prompt(s))], "image") for s in seeds]
                with RssSampler(srv.pid) as peak:
                    got = asyncio.run(burst(srv, reqs, self.a.max_tokens))
                time.sleep(self.a.settle)
                after, caches = rss_mb(srv.pid), self.caches(system)
                row: dict[str, Any] = {"step": "memory", "system": system, "burst": self.a.burst, "burst_no": b}
                row.update(rss_start_mb=round(start, 1), rss_before_mb=round(base, 1))
                row.update(rss_peak_mb=round(peak.value, 1), rss_after_mb=round(after, 1))
                row.update(held_mb=round(after - base, 1), held_since_start_mb=round(after - start, 1))
                if caches is not None and caches0 is not None:
                    grown = {k: round(1024 * (caches[k] - caches0[k]), 1) for k in caches}
                    row.update(caches_gb=caches, caches_grown_since_start_mb=grown)
                    # MLX's active memory holds the prefix cache and the image features (and the weights, unchanged)
                    beyond = after - start - grown["mlx_active_gb"] - grown["mlx_cache_gb"]
                    row["held_beyond_mlx_mb"] = round(beyond, 1)
                self.save({**row, **got})
            if system == "router" and self.a.unload_check:
                self.save(self.unload_check(srv, start))

    def unload_check(self, srv: Http, start: float) -> dict[str, Any]:
        """What the engine holds once the model is unloaded (caches dropped, malloc_trim) and loaded again, and
        after one more image request: whether what a burst left behind can be given back."""
        base = srv.url.replace("/v1/chat/completions", "")
        row: dict[str, Any] = {"step": "memory_unload", "system": "router", "rss_start_mb": round(start, 1)}
        row["rss_before_mb"] = round(rss_mb(srv.pid), 1)
        httpx.delete(f"{base}/v1/models/{self.a.name}", timeout=120).raise_for_status()
        time.sleep(self.a.settle)
        row["rss_unloaded_mb"] = round(rss_mb(srv.pid), 1)
        httpx.post(f"{base}/v1/models/{self.a.name}/load", timeout=600).raise_for_status()
        time.sleep(self.a.settle)
        row["rss_reloaded_mb"] = round(rss_mb(srv.pid), 1)
        self.one("router", 1)
        time.sleep(self.a.settle)
        row["rss_after_one_request_mb"] = round(rss_mb(srv.pid), 1)
        return row

    def caches(self, system: str) -> dict[str, float] | None:
        """mlx-router's prefix cache and MLX's buffers (GB, /v1/health); None for other servers."""
        if system != "router":
            return None
        health = httpx.get(self.http[system].url.replace("/v1/chat/completions", "/v1/health"), timeout=10).json()
        model = next(m for m in health["models"] if m["id"] == self.a.name)
        mem = health["memory"]
        return {
            "kv_cache_gb": model["kv_cache_gb"],
            "mlx_active_gb": mem["mlx_active_gb"],
            "mlx_cache_gb": mem["mlx_cache_gb"],
        }


def meta(a: argparse.Namespace) -> dict[str, Any]:
    """The machine, the library versions, the commit and the model's shape, for the first row of a run."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    cfg = json.loads((Path(a.model) / "config.json").read_text())
    vision = cfg["vision_config"]
    try:  # the GPU host gets the working tree without .git
        git = ["git", "rev-parse", "--short", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, cwd=HERE, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        commit = ""
    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "")
    return {
        "step": "meta",
        "machine": f"{platform.machine()} {cpu}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "versions": {p: installed(p) for p in ("mlx", "mlx-cuda-13", "mlx-lm", "mlx-vlm", "transformers")},
        "commit": commit.strip(),
        "shape": {
            "text": [
                cfg["hidden_size"],
                cfg["num_hidden_layers"],
                cfg["num_attention_heads"],
                cfg["num_key_value_heads"],
                cfg["intermediate_size"],
                cfg["vocab_size"],
            ],
            "vision": [vision["depth"], vision["hidden_size"], vision["num_heads"], vision["intermediate_size"]],
            "quantization": cfg.get("quantization"),
            "dtype": cfg.get("torch_dtype"),
        },
        "args": {k: v for k, v in vars(a).items() if k not in ("worker",)},
    }


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


class RssSampler:
    """The largest RSS of a process while the block runs (sampled every 100 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.value, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.value = max(self.value, rss_mb(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- servers ------------------------------------------------------------------------------------------------


@contextmanager
def mlx_vlm_server(a: argparse.Namespace, work: Path) -> Iterator[Http]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlx_vlm.server", "--model", str(a.model), "--host", "127.0.0.1", "--port", str(port)]
    srv = Server(cmd, port, work / "mlx_vlm_server.log", env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        srv.wait_ready("/health")
        yield Http("mlx_vlm.server", f"http://127.0.0.1:{port}", str(a.model), {}, srv.proc.pid)
    finally:
        srv.stop()


@contextmanager
def router(a: argparse.Namespace, work: Path) -> Iterator[Http]:
    ns = SimpleNamespace(
        name=a.name,
        model=a.model,
        max_running=a.max_running,
        max_queued=256,
        warm_all=False,
        batches=a.warm_batches,
        router_defaults=a.router_defaults,
        router_log_level="info",
        logs=a.logs,
    )
    with router_server(ns, work) as (_, base):
        pid = int(httpx.get(base + "/v1/health", timeout=10).json()["engine_pid"])
        yield Http("mlx-router", base, a.name, {"ignore_eos": True}, pid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="vlm")
    ap.add_argument("--out", default="vision_results.jsonl")
    ap.add_argument("--steps", default="ttft,agg,turns,memory")
    ap.add_argument("--systems", default="router,mlx_vlm_server,mlx_vlm", help="mlx_vlm: in process (stream, batch)")
    ap.add_argument("--size", type=int, default=448, help="images are SIZE x SIZE PNGs")
    ap.add_argument("--images", default="1,4", help="images per request in the ttft step")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the ttft and turns steps")
    ap.add_argument("--conc", default="8", help="concurrent image requests in the agg step")
    ap.add_argument("--text-conc", type=int, default=8, help="text streams beside them (mlx-router; 0: none)")
    ap.add_argument("--agg-rounds", type=int, default=2)
    ap.add_argument("--agg-warm", action="store_true", help="an agg round 0 at each level first (first-use work)")
    ap.add_argument("--warm-batches", default="1", help="batch sizes mlx-router warms at load")
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--memory-systems", default="router")
    ap.add_argument("--bursts", type=int, default=2, help="bursts in a row in the memory step")
    ap.add_argument("--unload-check", action="store_true", help="then unload and reload mlx-router's model")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the burst before RSS is read")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=100, help="text tokens of each prompt")
    ap.add_argument("--max-running", type=int, default=64)
    ap.add_argument("--router-defaults", default="{}", help="JSON merged into the router's `defaults`")
    ap.add_argument("--logs", default="", help="copy the router's log into this folder")
    a = ap.parse_args()
    if a.worker:
        worker_main(a.model)
        return
    a.model = str(Path(a.model).resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="vbench-"))
    systems = a.systems.split(",")
    with ExitStack() as stack:
        http: dict[str, Http] = {}
        if "router" in systems:
            http["router"] = stack.enter_context(router(a, work))
        if "mlx_vlm_server" in systems:
            http["mlx_vlm_server"] = stack.enter_context(mlx_vlm_server(a, work))
        raw = None
        if "mlx_vlm" in systems:
            raw = RawWorker(Path(a.model), work / "mlx_vlm_worker.log")
            stack.callback(raw.stop)
        bench = Bench(a, http, raw)
        bench.save(meta(a))
        bench.warm()
        for step in a.steps.split(","):
            getattr(bench, f"step_{step}")()
    print(f"logs in {work}", flush=True)


if __name__ == "__main__":
    main()
