"""Concurrent streaming load against any OpenAI-compatible /v1/chat/completions.

usage: load.py BASE_URL MODEL --conc 1,8,32 --max-tokens 256 [--prompt-words 155] [--retry-429]
       load.py BASE_URL MODEL --prefix-turns --prefix-words 3000
Prints one JSON line per concurrency: TTFT p50/max, per-stream decode tok/s, aggregate output tok/s, errors.
With --retry-429 a request refused with 429 waits Retry-After and tries again (counted as `retried`).
--prefix-turns measures a two-turn conversation: the second turn re-sends the first (a prefix-cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


def prompt(i: int, n: int) -> str:
    return f"Request {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))


class Refused(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after


async def stream_once(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, float, int, str]:
    """(ttft, total, completion tokens, text) of one streamed request."""
    t0 = time.perf_counter()
    ttft = None
    usage = None
    chunks = 0
    text = []
    async with client.stream("POST", url, json=body) as r:
        if r.status_code == 429:
            raise Refused(float(r.headers.get("retry-after", "1")))
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            obj = json.loads(data)
            if "error" in obj:
                raise RuntimeError(obj["error"].get("message", "error event"))
            if obj.get("usage"):
                usage = obj["usage"]
            for ch in obj.get("choices", []):
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    chunks += 1
                    text.append(piece)
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    tokens = (usage or {}).get("completion_tokens") or chunks
    return ttft or total, total, tokens, "".join(text)


async def one(client, url, model, i, a) -> tuple[float, float, int, int]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt(i, a.prompt_words)}],
        "max_tokens": a.max_tokens,
        "temperature": a.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if a.ignore_eos:
        body["ignore_eos"] = True
    retries = 0
    start = time.perf_counter()
    while True:
        try:
            ttft, total, tokens, _ = await stream_once(client, url, body)
            # TTFT and duration from the first attempt: time spent refused counts against the server.
            waited = time.perf_counter() - start - total
            return ttft + waited, total + waited, tokens, retries
        except Refused as e:
            if not a.retry_429:
                raise
            retries += 1
            await asyncio.sleep(e.retry_after)


async def run_load(a) -> None:
    url = a.base.rstrip("/") + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        await one(client, url, a.model, 999, a)  # warm-up
        for c in [int(x) for x in a.conc.split(",")]:
            t0 = time.perf_counter()
            # Prompts of their own per level: a prompt seen at an earlier level would hit the prefix cache.
            reqs = (one(client, url, a.model, 1000 * c + i, a) for i in range(c))
            got = await asyncio.gather(*reqs, return_exceptions=True)
            wall = time.perf_counter() - t0
            res = [r for r in got if not isinstance(r, BaseException)]
            errs = [type(r).__name__ for r in got if isinstance(r, BaseException)]
            out: dict = {"label": a.label, "conc": c, "errors": len(errs), "error_kinds": sorted(set(errs))}
            if res:
                ttfts = sorted(r[0] for r in res)
                dec = [(r[2] - 1) / (r[1] - r[0]) for r in res if r[1] > r[0] and r[2] > 1]
                total = sum(r[2] for r in res)
                out.update(
                    {
                        "ttft_p50_ms": round(1000 * statistics.median(ttfts), 1),
                        "ttft_max_ms": round(1000 * ttfts[-1], 1),
                        "stream_tok_s_p50": round(statistics.median(dec), 1) if dec else None,
                        "agg_tok_s": round(total / wall, 1),
                        "tokens": total,
                        "wall_s": round(wall, 2),
                        "retried_429": sum(r[3] for r in res),
                    }
                )
            print(json.dumps(out), flush=True)


async def run_prefix(a) -> None:
    """Turn 1: a long user message. Turn 2: the same conversation plus the reply and a short question."""
    url = a.base.rstrip("/") + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=900) as client:
        await stream_once(
            client,
            url,
            {
                "model": a.model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "stream": True,
                "temperature": 0,
            },
        )
        history = [{"role": "user", "content": prompt(7, a.prefix_words)}]
        body = {
            "model": a.model,
            "messages": history,
            "max_tokens": a.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        ttft1, _, _, reply = await stream_once(client, url, body)
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
        body["messages"] = history
        ttft2, _, _, _ = await stream_once(client, url, body)
        print(
            json.dumps(
                {
                    "label": a.label,
                    "prefix_words": a.prefix_words,
                    "turn1_ttft_ms": round(1000 * ttft1, 1),
                    "turn2_ttft_ms": round(1000 * ttft2, 1),
                    "ratio": round(ttft2 / ttft1, 3),
                }
            ),
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("model")
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--prompt-words", type=int, default=155)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--retry-429", action="store_true")
    ap.add_argument("--ignore-eos", action="store_true", help="send ignore_eos (servers that support it)")
    ap.add_argument("--prefix-turns", action="store_true")
    ap.add_argument("--prefix-words", type=int, default=3000)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    asyncio.run(run_prefix(a) if a.prefix_turns else run_load(a))


if __name__ == "__main__":
    main()
