"""Reliability probe: replays issue 20's hardening probe against a real mlx-router on 127.0.0.1.

usage: reliability.py [--model-dir DIR --model ID] [--budget-s 900] [--streams 64] [--storm 100] [--kills 3]
                      [--slow 8] [--slow-s 10] [--sigterm-load 12] [--drain-s 3] [--out summary.json]

Starts `python -m mlx_router` on a free port (the built-in demo model unless --model-dir/--model name one), then,
each phase bounded in count and time and skipped once --budget-s is spent:
  load        --streams concurrent streams: how many are served (429/503 with Retry-After are honest refusals)
  bad_inputs  a table of malformed, out-of-range and hostile requests: each must get 2xx or 4xx, never a 5xx
  storm       --storm clients that leave mid-request; the server must drain (nothing in flight) and keep its memory
  slow        --slow clients that stop reading or read a trickle, and half-sent request heads: others are served
  engine_kill --kills SIGKILLs of the engine with requests in flight and requests sent 0.01-0.6 s after
  sigterm     SIGTERM with --sigterm-load requests running (drain_seconds --drain-s), and new ones after it
A request is lost when it hangs past its bound, its connection breaks without an answer, a stream ends without
`[DONE]`, or a 5xx comes without OpenAI's error envelope. A 429/503 with Retry-After, a 4xx, or an error event
followed by `[DONE]` is an honest answer. Prints a summary (load held, faults survived, inputs tried, requests
lost) and exits 1 when a request was lost or an input got a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BOUND_S = 30.0  # no request may take longer than this (the server's own timeout is 60 s)
LONG_TOKENS = 3000  # a generation that runs for several seconds on a small model


# -- outcomes ------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    kind: str  # served | refused | error_event | error_json | client_left | lost
    status: int | None = None
    seconds: float = 0.0
    detail: str = ""


def _envelope(r: httpx.Response) -> dict[str, Any] | None:
    try:
        body = r.json()
    except ValueError:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err) else None


def _answer(r: httpx.Response) -> Outcome:
    """A non-streamed answer, or a stream refused before it started."""
    if r.status_code == 200:
        try:
            ok = bool(r.json().get("choices"))
        except ValueError:
            ok = False
        return Outcome("served" if ok else "lost", 200, detail="" if ok else "200 without choices")
    err = _envelope(r)
    if r.status_code in (429, 503) and err is not None and r.headers.get("retry-after"):
        return Outcome("refused", r.status_code, detail=str(err["code"]))
    if r.status_code >= 500:
        if err is None:
            return Outcome("lost", r.status_code, detail=f"{r.status_code} without the error envelope: {r.text[:80]}")
        return Outcome("error_json", r.status_code, detail=str(err["code"]))
    return Outcome("refused", r.status_code, detail=str(err and err["code"]) if err else "no envelope")


def _stream_end(events: list[str]) -> Outcome:
    if not events or events[-1] != "[DONE]":
        return Outcome("lost", 200, detail=f"stream cut after {len(events)} events, no [DONE]")
    for e in events[:-1]:
        if '"error"' in e and "error" in json.loads(e):
            return Outcome("error_event", 200, detail=str(json.loads(e)["error"].get("code")))
    return Outcome("served", 200)


async def chat(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    leave_after: int | None = None,
    path: str = "/v1/chat/completions",
) -> Outcome:
    """Send one request and classify its end; `leave_after` events, the client goes away (disconnect)."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(BOUND_S):
            out = await _exchange(client, path, body, leave_after)
    except TimeoutError:
        out = Outcome("lost", detail=f"no answer within {BOUND_S:g}s")
    except httpx.ConnectError:
        out = Outcome("refused", detail="connection refused")  # nothing was accepted: the client knows
    except httpx.HTTPError as e:
        out = Outcome("lost", detail=f"{type(e).__name__}: {e}")
    out.seconds = time.monotonic() - t0
    return out


async def _exchange(client: httpx.AsyncClient, path: str, body: dict[str, Any], leave_after: int | None) -> Outcome:
    if not body.get("stream"):
        return _answer(await client.post(path, json=body))
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return _answer(r)
        events: list[str] = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if leave_after is not None and len(events) >= leave_after:
                    return Outcome("client_left", 200)
        return _stream_end(events)


# -- the server ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m mlx_router` on a free port of 127.0.0.1, with its log in the work folder."""

    def __init__(self, work: Path, model_dir: Path | None, drain_s: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "server.log"
        defaults: dict[str, Any] = {"scan_hf_cache": False, "timeout": 60, "max_tokens": 64}
        defaults["model_directory"] = str(model_dir or work / "no-models")
        (work / "no-models").mkdir(exist_ok=True)
        config = {"defaults": defaults, "server": {"ip": "127.0.0.1", "port": self.port, "drain_seconds": drain_s}}
        self.config_path = work / "config.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.demo = model_dir is None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "mlx_router", "--config", str(self.config_path)]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd + ([] if self.demo else ["--no-demo"]), cwd=REPO, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in {timeout:g}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.base + "/v1/health", timeout=10).json())

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the server and its engine, in MB."""
        out = {}
        for name, pid in (("server", self.proc.pid if self.proc else None), ("engine", self.health()["engine_pid"])):
            try:
                out[name] = round(psutil.Process(pid).memory_info().rss / 1024**2, 1)
            except (psutil.Error, TypeError):
                out[name] = 0.0
        return out


async def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
    """Seconds until `cond()` held, or None if it did not within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if await asyncio.to_thread(cond):
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        await asyncio.sleep(step)
    return None


def _engine_running(h: dict[str, Any]) -> bool:
    return bool(h.get("engine_state", "running") == "running" and h["worker_alive"])


def _idle(srv: Server) -> bool:
    h = srv.health()
    return h["requests_in_flight"] == 0 and all(m["running"] + m["queued"] == 0 for m in h["models"])


# -- the probe -----------------------------------------------------------------------------------------------
@dataclass
class Report:
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    faults: list[tuple[str, bool]] = field(default_factory=list)
    inputs_tried: int = 0

    def count(self, phase: str, outcomes: list[Outcome], where: str) -> dict[str, int]:
        """Tally outcomes; every lost one is recorded with where it happened."""
        tally = Counter(o.kind for o in outcomes)
        self.lost += [f"{phase}/{where}: {o.detail}" for o in outcomes if o.kind == "lost"]
        return dict(tally)


class Probe:
    def __init__(self, args: argparse.Namespace, srv: Server, model: str) -> None:
        self.a = args
        self.srv = srv
        self.model = model
        self.report = Report()
        self.deadline = time.monotonic() + args.budget_s

    def body(self, max_tokens: int = 8, stream: bool = False, **extra: Any) -> dict[str, Any]:
        b = {"model": self.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
        b.update(stream=stream, temperature=0, **extra)
        return b

    def client(self, timeout: float = BOUND_S + 5) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
        return httpx.AsyncClient(base_url=self.srv.base, timeout=timeout, limits=limits)

    async def served(self) -> bool:
        """Whether a short request, on a connection of its own, is served now."""
        async with self.client() as c:
            return (await chat(c, self.body())).kind == "served"

    async def run(self, phases: list[tuple[str, float, Callable[[], Awaitable[dict[str, Any]]]]]) -> Report:
        for name, needs_s, phase in phases:
            left = self.deadline - time.monotonic()
            if left < needs_s:
                self.report.phases[name] = {"skipped": f"{left:.0f}s of the budget left, needs {needs_s:g}s"}
                continue
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(left):
                    result = await phase()
            except TimeoutError:
                result = {"error": "the time budget ran out"}
            result["seconds"] = round(time.monotonic() - t0, 1)
            self.report.phases[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
        return self.report

    # -- load ------------------------------------------------------------------------------------------------
    async def load(self) -> dict[str, Any]:
        async with self.client() as c:
            outs = await asyncio.gather(*(chat(c, self.body(32, stream=True)) for _ in range(self.a.streams)))
        tally = self.report.count("load", outs, "stream")
        served = sorted(o.seconds for o in outs if o.kind == "served")
        return {"concurrent": self.a.streams, **tally, "p50_s": round(served[len(served) // 2], 2) if served else None}

    # -- bad inputs ------------------------------------------------------------------------------------------
    async def bad_inputs(self) -> dict[str, Any]:
        statuses: Counter[str] = Counter()
        async with self.client() as c:
            for name, method, path, content, headers in bad_input_table(self.model, self.body()):
                self.report.inputs_tried += 1
                t0 = time.monotonic()
                try:
                    r = await asyncio.wait_for(c.request(method, path, content=content(), headers=headers), BOUND_S)
                except httpx.LocalProtocolError as e:  # the client would not send it: nothing was probed
                    self.report.inputs_tried -= 1
                    print(f"bad_inputs/{name}: not sent ({e})", flush=True)
                    continue
                except (TimeoutError, httpx.HTTPError) as e:
                    self.report.lost.append(f"bad_inputs/{name}: {type(e).__name__} {e}")
                    continue
                statuses[str(r.status_code)] += 1
                if name in EXPECTED and r.status_code not in EXPECTED[name]:
                    self.report.findings.append(f"bad_inputs/{name}: {r.status_code}, expected {EXPECTED[name]}")
                if r.status_code >= 500:
                    self.report.findings.append(f"bad_inputs/{name}: {r.status_code} {r.text[:160]}")
                elif r.status_code >= 400 and _envelope(r) is None and r.status_code not in (404, 405, 431):
                    self.report.findings.append(f"bad_inputs/{name}: {r.status_code} without the error envelope")
                if time.monotonic() - t0 > 5:
                    self.report.findings.append(f"bad_inputs/{name}: took {time.monotonic() - t0:.1f}s")
        alive = await self.served()
        self.report.faults.append(("bad inputs", alive))
        return {"inputs": self.report.inputs_tried, "statuses": dict(statuses), "served_after": alive}

    # -- disconnect storm ------------------------------------------------------------------------------------
    async def storm(self) -> dict[str, Any]:
        before = self.srv.rss_mb()
        n = self.a.storm
        async with self.client() as c:
            streams = [chat(c, self.body(LONG_TOKENS, stream=True, ignore_eos=True), leave_after=2) for _ in range(n)]
            outs = await asyncio.gather(*streams)
        async with self.client(timeout=0.3) as c:  # non-streamed requests whose clients give up after 0.3 s
            gone = await asyncio.gather(
                *(c.post("/v1/chat/completions", json=self.body(LONG_TOKENS, ignore_eos=True)) for _ in range(n // 2)),
                return_exceptions=True,
            )
        drained = await wait_until(lambda: _idle(self.srv), 60)  # from when the last client left
        after = self.srv.rss_mb()
        served = await self.served()
        tally = self.report.count("storm", [o for o in outs if o.kind != "client_left"], "stream")
        self.report.faults.append(("disconnect storm", drained is not None and served and "lost" not in tally))
        return {
            "clients": n + n // 2,
            "left_mid_stream": sum(o.kind == "client_left" for o in outs),
            "gave_up_waiting": sum(isinstance(g, httpx.TimeoutException) for g in gone),
            **tally,
            "drained_s": None if drained is None else round(drained, 2),
            "rss_mb_before": before,
            "rss_mb_after": after,
            "served_after": served,
        }

    # -- slow clients ----------------------------------------------------------------------------------------
    async def slow(self) -> dict[str, Any]:
        stalled = [await _raw_stream(self.srv.port, self.body(LONG_TOKENS, stream=True, ignore_eos=True))
                   for _ in range(self.a.slow)]  # fmt: skip
        trickle = [asyncio.create_task(_trickle(self.srv.port, self.body(LONG_TOKENS, stream=True, ignore_eos=True),
                                                self.a.slow_s)) for _ in range(self.a.slow)]  # fmt: skip
        heads = [await _half_head(self.srv.port) for _ in range(4)]
        await asyncio.sleep(1.0)
        async with self.client() as c:
            others = await asyncio.gather(chat(c, self.body()), chat(c, self.body(stream=True)))
        held = await asyncio.gather(*(_held_open(r, self.a.slow_s) for r, _ in heads))
        if max(held) >= self.a.slow_s - 0.1:
            self.report.findings.append(f"slow: a half-sent request head was held open for all of {self.a.slow_s:g}s")
        for _, w in stalled + heads:
            w.close()
        trickled = await asyncio.gather(*trickle)
        drained = await wait_until(lambda: _idle(self.srv), 60)
        tally = self.report.count("slow", list(others), "other client")
        ok = all(o.kind == "served" for o in others) and drained is not None
        self.report.faults.append(("slow clients", ok))
        return {
            "stalled_readers": len(stalled),
            "trickle_readers": len(trickle),
            "trickle_bytes": sum(trickled),
            "others": tally,
            "others_s": [round(o.seconds, 2) for o in others],
            "half_heads_held_open_s": [round(h, 1) for h in held],
            "drained_s": None if drained is None else round(drained, 2),
        }

    # -- engine kills ----------------------------------------------------------------------------------------
    async def engine_kill(self) -> dict[str, Any]:
        rounds = []
        for _ in range(self.a.kills):
            rounds.append(await self._kill_once())
        return {"kills": len(rounds), "rounds": rounds}

    async def _kill_once(self) -> dict[str, Any]:
        delays = (0.01, 0.05, 0.1, 0.2, 0.4, 0.6)
        async with self.client() as c:
            long = self.body(LONG_TOKENS, ignore_eos=True)
            inflight = [asyncio.create_task(chat(c, dict(long, stream=s))) for s in (True, False)]
            await wait_until(lambda: any(m["running"] for m in self.srv.health()["models"]), 30)
            engine = self.srv.health()["engine_pid"]
            os.kill(engine, signal.SIGKILL)
            killed = time.monotonic()
            window = []
            for i, d in enumerate(delays):
                await asyncio.sleep(max(0.0, killed + d - time.monotonic()))
                window.append(asyncio.create_task(chat(c, self.body(stream=i % 2 == 1))))
            in_flight_outs = await asyncio.gather(*inflight)
            window_outs = await asyncio.gather(*window)
        back = await wait_until(lambda: _engine_running(self.srv.health()), 60)
        served = await self.served()
        in_flight = self.report.count("engine_kill", in_flight_outs, "in flight")
        in_window = self.report.count("engine_kill", window_outs, "sent after the kill")
        lost = "lost" in in_flight or "lost" in in_window
        self.report.faults.append(("engine kill", back is not None and served and not lost))
        return {
            "in_flight": in_flight,
            "window": in_window,
            "window_s_max": round(max(o.seconds for o in window_outs), 2),
            "window_not_served": [
                f"{d}s: {o.kind} {o.status} {o.detail}"
                for d, o in zip(delays, window_outs, strict=True)
                if o.kind != "served"
            ],
            "engine_back_s": None if back is None else round(back, 2),
        }

    # -- SIGTERM under load (ends the server) ----------------------------------------------------------------
    async def sigterm(self) -> dict[str, Any]:
        assert self.srv.proc is not None
        engine = self.srv.health()["engine_pid"]
        n = self.a.sigterm_load
        async with self.client() as c:
            long = self.body(LONG_TOKENS, ignore_eos=True)
            running = [asyncio.create_task(chat(c, dict(long, stream=i % 2 == 0))) for i in range(n)]
            short = [asyncio.create_task(chat(c, self.body(16, stream=i % 2 == 0))) for i in range(4)]
            await wait_until(lambda: any(m["running"] for m in self.srv.health()["models"]), 30)
            t0 = time.monotonic()
            self.srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with self.client() as fresh:  # new connections, after the signal
                late = await asyncio.gather(*(chat(fresh, self.body()) for _ in range(4)))
            outs = await asyncio.gather(*running, *short)
        exited = await wait_until(lambda: self.srv.proc is not None and self.srv.proc.poll() is not None, 60)
        engine_gone = await wait_until(lambda: not psutil.pid_exists(engine), 20)
        at_signal = self.report.count("sigterm", outs, "running at the signal")
        after = self.report.count("sigterm", late, "sent after the signal")
        ok = exited is not None and engine_gone is not None and "lost" not in at_signal and "lost" not in after
        self.report.faults.append(("SIGTERM under load", ok))
        return {
            "running": at_signal,
            "after_signal": after,
            "after_signal_detail": sorted({o.detail for o in late}),
            "exit_s": None if exited is None else round(time.monotonic() - t0, 1),
            "exit_code": self.srv.proc.returncode,
            "engine_gone": engine_gone is not None,
        }


# -- raw sockets for the slow clients ------------------------------------------------------------------------
def _http_request(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _raw_stream(port: int, body: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends a stream request and never reads a byte (a small receive buffer fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(_http_request(port, body))
    await writer.drain()
    return reader, writer


async def _trickle(port: int, body: dict[str, Any], seconds: float) -> int:
    """A client that reads 64 bytes every half second for `seconds`, then leaves; the bytes it got."""
    reader, writer = await _raw_stream(port, body)
    got = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            chunk = await asyncio.wait_for(reader.read(64), 5)
            if not chunk:
                break
            got += len(chunk)
            await asyncio.sleep(0.5)
    except (TimeoutError, OSError):
        pass
    writer.close()
    return got


async def _half_head(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends half a request head and waits."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    return reader, writer


async def _held_open(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long the server kept a half-sent head's connection open (capped at `seconds`)."""
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), seconds)
    except (TimeoutError, OSError):
        pass
    return time.monotonic() - t0


# -- the bad-input table -------------------------------------------------------------------------------------
BadInput = tuple[str, str, str, Callable[[], Any], dict[str, str]]
JSON = {"content-type": "application/json"}

FIELD_VALUES: dict[str, list[Any]] = {
    "max_tokens": [-1, 0, 2**31, 2**64, 1.5, "4", None, [], True],
    "max_completion_tokens": [-1, 0, 2**40],
    "temperature": [-1, 2.5, 1e308, "hot", []],
    "top_p": [-0.1, 1.5, "x"],
    "top_k": [-5, 10**12, "x"],
    "min_p": [-1, 2],
    "n": [0, -1, 2, 1000],
    "seed": [-1, 2**64, 2**63, 1.5, "x"],
    "stop": [["a"] * 5, [""], "", [1], {"a": 1}, "x" * 100_000],
    "logprobs": ["yes", 5],
    "top_logprobs": [-1, 21, 10**6],
    "presence_penalty": [-3, 3, "x"],
    "frequency_penalty": [-3, 3],
    "repetition_penalty": [0, -1],
    "logit_bias": [{"x": 1}, {"1": 1000}, []],
    "response_format": [
        {"type": "nope"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}},
        "json",
    ],
    "tools": [
        [{"type": "function"}],
        [{"type": "function", "function": {"name": ""}}],
        [{"type": "function", "function": {"name": "f", "parameters": {"type": "zzz"}}}],
        "x",
    ],
    "tool_choice": ["maybe", {"type": "function", "function": {"name": "missing"}}, {"type": "function"}],
    "messages": [
        [],
        "hi",
        [{"role": "wizard", "content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": None}],
        [{"role": "user", "content": "a\ud800b"}],
        [{"role": "user", "content": [{"type": "nonsense"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}],
        [{"role": "tool", "content": "x"}],
        [{"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]}],
        [{"role": "user", "content": "x" * 300_000}],
    ],
    "model": ["", "../../etc/passwd", "x" * 10_000, None, 5, "no-such-model", "%00"],
    "stream": ["yes", 2],
    "stream_options": [{"include_usage": "x"}, "x"],
    "chat_template_kwargs": [{"add_generation_prompt": False}, {"tools": []}, {"messages": []}, "x"],
    "reasoning_effort": ["extreme"],
}

# Inputs with one right answer (issue 20: items 6 and 7); the rest may get any 2xx or 4xx.
EXPECTED: dict[str, set[int]] = {
    "body over the limit": {413},
    "chunked body over the limit": {413},
    "foreign Host": {400, 421},  # the server is on a loopback address with no allowed_hosts
}

COMPLETION_PROMPTS: list[Any] = [[], [[]], [-1], [10**9], "a\ud800b", {"x": 1}, 5, None, "x" * 300_000]
COMPLETION_FIELDS: dict[str, list[Any]] = {
    "echo": ["x", 2],
    "logprobs": [-1, 6, "x"],
    "suffix": [5],
    "best_of": [0, 100],
    "n": [0, 1000],
    "max_tokens": [-1, 2**64],
    "seed": [-1, 2**64],
}


def bad_input_table(model: str, base: dict[str, Any]) -> Iterator[BadInput]:
    """Every bad input: one field of a good request replaced, then raw bodies, methods, paths and headers."""
    for name, values in FIELD_VALUES.items():
        for i, value in enumerate(values):
            data = json.dumps(dict(base, **{name: value})).encode()
            yield f"{name}[{i}]", "POST", "/v1/chat/completions", _const(data), JSON
    for i, prompt in enumerate(COMPLETION_PROMPTS):
        data = json.dumps({"model": model, "prompt": prompt, "max_tokens": 4}).encode()
        yield f"completions.prompt[{i}]", "POST", "/v1/completions", _const(data), JSON
    for name, values in COMPLETION_FIELDS.items():
        for i, value in enumerate(values):
            data = json.dumps({"model": model, "prompt": "hi", "max_tokens": 4, name: value}).encode()
            yield f"completions.{name}[{i}]", "POST", "/v1/completions", _const(data), JSON
    good = json.dumps(base)
    raw = {
        "empty": b"",
        "truncated": good[: len(good) // 2].encode(),
        "null": b"null",
        "array": b"[]",
        "string": b'"x"',
        "not utf-8": b'{"model": "\xff\xfe"}',
        "NaN": good.replace('"temperature": 0', '"temperature": NaN').encode(),
        "Infinity": good.replace('"max_tokens": 8', '"max_tokens": Infinity').encode(),
        "huge number": good.replace('"max_tokens": 8', '"max_tokens": 1' + "0" * 5000).encode(),
        "deep nesting": ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        "duplicate keys": good[:-1].encode() + b', "max_tokens": -5}',
        "whitespace": b"   \n ",
        "byte order mark": b"\xef\xbb\xbf" + good.encode(),
        "long key": good[:-1].encode() + b', "' + b"k" * 1_000_000 + b'": 1}',
        "20k messages": json.dumps(dict(base, messages=[{"role": "user", "content": "hi"}] * 20_000)).encode(),
    }
    for name, data in raw.items():
        yield f"raw.{name}", "POST", "/v1/chat/completions", _const(data), JSON
    yield "raw.text/plain", "POST", "/v1/chat/completions", lambda: good.encode(), {"content-type": "text/plain"}
    big = b'{"x": "' + b"y" * (40 * 1024**2) + b'"}'
    yield "body over the limit", "POST", "/v1/chat/completions", lambda: big, JSON
    yield "chunked body over the limit", "POST", "/v1/chat/completions", lambda: _chunks(big), JSON
    for method, path in [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/completions"),
        ("GET", "/v1/nothing"),
        ("GET", "/v1/models/no-such-model"),
        ("POST", "/v1/models/no-such-model/load"),
        ("POST", "/v1/models/..%2F..%2Fetc/load"),
        ("DELETE", "/v1/models/no-such-model"),
    ]:
        yield f"{method} {path}", method, path, lambda: b"", {}
    yield "huge header", "POST", "/v1/chat/completions", lambda: good.encode(), dict(JSON, **{"x-big": "z" * 100_000})
    gzip = dict(JSON, **{"content-encoding": "gzip"})
    yield "gzip garbage", "POST", "/v1/chat/completions", lambda: b"\x1f\x8bnot gzip", gzip
    bearer = dict(JSON, authorization="Bearer not-a-key")
    yield "bad bearer", "POST", "/v1/chat/completions", lambda: good.encode(), bearer
    yield "foreign Host", "POST", "/v1/chat/completions", lambda: good.encode(), dict(JSON, host="evil.example")


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """The body without a Content-Length (chunked transfer encoding)."""
    for i in range(0, len(data), 1024**2):
        yield data[i : i + 1024**2]


# -- main ----------------------------------------------------------------------------------------------------
def summary(report: Report, args: argparse.Namespace) -> dict[str, Any]:
    load = report.phases.get("load", {})
    survived = sum(ok for _, ok in report.faults)
    return {
        "load_held": f"{load.get('served', 0)}/{args.streams} concurrent streams served, "
        f"{load.get('refused', 0)} refused with Retry-After",
        "faults_survived": f"{survived}/{len(report.faults)}: "
        + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in report.faults),
        "inputs_tried": report.inputs_tried,
        "wrong_answers": len(report.findings),  # 5xx, a 4xx without the envelope, a status other than the one due
        "requests_lost": len(report.lost),
        "lost": report.lost[:50],
        "findings": report.findings[:50],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, help="models folder (default: the built-in demo model)")
    p.add_argument("--model", default="mlx-router-demo", help="model to probe")
    p.add_argument("--budget-s", type=float, default=900, help="time for all phases together")
    p.add_argument("--streams", type=int, default=64, help="concurrent streams of the load phase")
    p.add_argument("--storm", type=int, default=100, help="streams that leave mid-way (plus half as many unary)")
    p.add_argument("--slow", type=int, default=8, help="stalled readers, and as many trickle readers")
    p.add_argument("--slow-s", type=float, default=10, help="how long the slow clients stay")
    p.add_argument("--kills", type=int, default=3, help="engine SIGKILLs")
    p.add_argument("--sigterm-load", type=int, default=12, help="long requests running at the SIGTERM")
    p.add_argument("--drain-s", type=float, default=3, help="the server's drain_seconds")
    p.add_argument("--phases", default="load,bad_inputs,storm,slow,engine_kill,sigterm", help="which, in order")
    p.add_argument("--out", type=Path, help="write the phases and the summary here as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mlx-router-reliability-"))
    srv = Server(work, args.model_dir, args.drain_s)
    print(f"starting the server on {srv.base} (log: {srv.log_path})", flush=True)
    srv.start()
    probe = Probe(args, srv, args.model)
    minimum = {"load": 30, "bad_inputs": 60, "storm": 60, "slow": args.slow_s + 40, "engine_kill": 60, "sigterm": 60}
    chosen = [p for p in args.phases.split(",") if p]
    try:
        report = asyncio.run(probe.run([(p, minimum[p], getattr(probe, p)) for p in chosen]))
    finally:
        srv.stop()
    result = summary(report, args)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"phases": report.phases, "summary": result}, indent=1))
    return 1 if report.lost or report.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
