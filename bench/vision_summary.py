"""The figures of a vision_bench.py run, as markdown: medians over rounds (round 0, first-use work, left out).

usage: vision_summary.py RESULTS.jsonl [--model NAME]
A file may hold several runs (each starts with its `meta` row): each is summarised on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from typing import Any


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def ttft_table(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in rows:
        by[(r["images"], r["system"])].append(r["ttft_ms"])
    out = [
        "| images | mlx-router ms | mlx_vlm.server ms | mlx-vlm stream_generate ms | router / stream_generate "
        "| router / server | rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sorted({k[0] for k in by}):
        rt, sv, ip = (median(by[(n, s)]) for s in ("router", "mlx_vlm_server", "mlx_vlm_inprocess"))
        rounds = max(len(by[(n, s)]) for s in ("router", "mlx_vlm_server", "mlx_vlm_inprocess"))
        out.append(f"| {n} | {rt} | {sv} | {ip} | {ratio(rt, ip)} | {ratio(rt, sv)} | {rounds} |")
    return out


def agg_table(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("round", 1) >= 1:
            by[(r["conc"], r["system"])].append(r)
    out = [
        "| streams | system | image tok/s | text tok/s | all tok/s | image TTFT p50 ms | errors | rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (conc, system), rs in sorted(by.items()):
        if system == "mlx_vlm_batch":
            img, text, both, ttft = median([r["agg_tok_s"] for r in rs]), None, None, None
            errors = 0
        else:
            img = median([r["image"]["agg_tok_s"] for r in rs if "image" in r])
            text = median([r["text"]["agg_tok_s"] for r in rs if "text" in r])
            both = median([r["all"]["agg_tok_s"] for r in rs if "all" in r]) if "+" in system else None
            ttft = median([r["image"]["ttft_p50_ms"] for r in rs if "image" in r])
            errors = sum(r["errors"] for r in rs)
        out.append(f"| {conc} | {system} | {img} | {text or ''} | {both or ''} | {ttft or ''} | {errors} | {len(rs)} |")
    return out


def runs(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows split at each `meta` row."""
    out: list[list[dict[str, Any]]] = []
    for r in rows:
        if r["step"] == "meta" or not out:
            out.append([])
        out[-1].append(r)
    return out


def summary(rows: list[dict[str, Any]]) -> list[str]:
    steps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        steps[r["step"]].append(r)
    lines: list[str] = []
    for m in steps["meta"]:
        lines.append(f"machine: {m['machine']}; {m['versions']}; commit {m['commit']}; shape {m['shape']}")
        lines.append(f"steps {m['args']['steps']}, systems {m['args']['systems']}")
    loads = [r["load1"] for r in rows if "load1" in r]
    if loads:
        lines.append(f"load average (1 min) while measured: {min(loads)} to {max(loads)}")
    if steps["ttft"]:
        lines += ["", "First token, 1 stream (median over rounds)", *ttft_table(steps["ttft"])]
    if steps["agg"]:
        lines += ["", "Aggregate, one image per request (median over rounds >= 1)", *agg_table(steps["agg"])]
    for r in steps["turns"]:
        lines.append(
            f"turns {r['system']} round {r['round']}: {r['turn1_ttft_ms']} -> {r['turn2_ttft_ms']} ms "
            f"(ratio {r['ratio']}; prompt {r['turn1_prompt_tokens']} -> {r['turn2_prompt_tokens']} tokens)"
        )
    for r in steps["memory"]:
        grown = r.get("caches_grown_since_start_mb")  # from the rows, so runs of older code read the same
        beyond = round(r["held_since_start_mb"] - grown["mlx_active_gb"] - grown["mlx_cache_gb"], 1) if grown else None
        lines.append(
            f"memory {r['system']} burst {r.get('burst_no', 1)} of {r['burst']}: RSS {r.get('rss_start_mb', '-')} MB "
            f"at start, {r['rss_before_mb']} before, {r['rss_peak_mb']} peak, {r['rss_after_mb']} after "
            f"(held {r['held_mb']} MB of this burst, {r.get('held_since_start_mb', '-')} since start"
            + (f"; beyond MLX's active memory and buffer cache: {beyond} MB" if beyond is not None else "")
            + f"); {r['errors']} errors, {r.get('image', {}).get('agg_tok_s')} tok/s"
        )
    for r in steps["memory_unload"]:
        lines.append(
            f"memory router, unloaded and loaded again: RSS {r['rss_start_mb']} MB at start, {r['rss_before_mb']} "
            f"after the bursts, {r['rss_unloaded_mb']} unloaded, {r['rss_reloaded_mb']} loaded again, "
            f"{r['rss_after_one_request_mb']} after one more image request"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    rows = [json.loads(x) for x in open(a.results) if x.strip()]
    rows = [r for r in rows if not a.model or r.get("model") == a.model]
    for i, run in enumerate(runs(rows), 1):
        print(f"## run {i}", *summary(run), "", sep="\n")


if __name__ == "__main__":
    main()
