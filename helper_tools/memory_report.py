"""How much memory each installed model needs by mlx-router's own accounting, and what this machine has.

    python helper_tools/memory_report.py [--config config.json] [--json]

Numbers use the server's formulas: a model costs its weights (or `required_memory_gb`) times `safety_margin`;
a request reserves KV cache for prompt + max_tokens tokens; the budget is `memory_budget_gb` or, unset, the
total memory less `memory_threshold_gb` (at least half of it). Use it to choose `cache_size`,
`memory_budget_gb` and `max_tokens`; MEMORY_PRESSURE.md explains each. GB here means GiB (2**30 bytes), as in
the config. Reads files only: no model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the checkout (mlx_router, helper_tools) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helper_tools.common import add_config_arguments, gb, load_tool_settings, served_models  # noqa: E402
from mlx_router.config.discovery import ModelEntry  # noqa: E402
from mlx_router.config.memory import estimate_model_bytes as estimate_bytes  # noqa: E402
from mlx_router.config.memory import kv_bytes_per_token, read_model_config  # noqa: E402
from mlx_router.config.settings import ConfigError, Settings  # noqa: E402

GB = 1024**3


@dataclass(frozen=True)
class ModelMemory:
    """One model as the server's memory accounting sees it."""

    id: str
    weights_gb: float
    basis: str  # "weights" or "required_memory_gb"
    estimate_gb: float  # what loading it counts against the budget
    kv_bytes_per_token: int  # 0 when config.json does not give the shape
    max_tokens: int  # the default output limit for this model
    kv_at_max_tokens_gb: float  # KV reserved by one request of max_tokens (its prompt comes on top)
    requests_beside_it: int | None  # such requests that fit in the budget next to this model alone


def model_memory(entry: ModelEntry, settings: Settings, budget_bytes: int) -> ModelMemory:
    """The memory facts of one discovered model."""
    ms = settings.model_settings(entry.id)
    estimate = estimate_bytes(entry, settings)
    per_token = kv_bytes_per_token(read_model_config(entry.path))
    max_tokens = ms.max_tokens or settings.defaults.max_tokens
    kv_request = per_token * max_tokens
    room = budget_bytes - estimate
    return ModelMemory(
        id=entry.id,
        weights_gb=gb(entry.size_bytes),
        basis="required_memory_gb" if ms.required_memory_gb else "weights",
        estimate_gb=gb(estimate),
        kv_bytes_per_token=per_token,
        max_tokens=max_tokens,
        kv_at_max_tokens_gb=gb(kv_request),
        requests_beside_it=(max(0, room) // kv_request) if kv_request else None,
    )


def fit_together(estimates_gb: Sequence[float], budget_gb: float) -> int:
    """The largest n such that the n largest models fit in the budget together (any n of them then fit)."""
    total, count = 0.0, 0
    for size in sorted(estimates_gb, reverse=True):
        if total + size > budget_gb:
            break
        total, count = total + size, count + 1
    return count


def build_report(settings: Settings, entries: Sequence[ModelEntry], machine: dict[str, Any]) -> dict[str, Any]:
    """Everything the report shows, as plain data (`--json` prints it as is)."""
    budget_bytes = int(machine["budget_gb"] * GB)
    models = [model_memory(e, settings, budget_bytes) for e in sorted(entries, key=lambda e: e.id)]
    d = settings.defaults
    return {
        "machine": machine,
        "settings": {
            "memory_budget_gb": d.memory_budget_gb,
            "memory_threshold_gb": d.memory_threshold_gb,
            "safety_margin": d.safety_margin,
            "cache_size": d.cache_size,
            "swap_high_percent": d.swap_high_percent,
            "swap_critical_percent": d.swap_critical_percent,
            "max_running_requests": d.max_running_requests,
        },
        "models": [asdict(m) for m in models],
        "fit_together": fit_together([m.estimate_gb for m in models], machine["budget_gb"]),
    }


def machine_memory(settings: Settings) -> dict[str, Any]:
    """This machine's memory, the pressure level now and the model budget, read as the server reads them."""
    from mlx_router.engine.resource_monitor import ResourceMonitor  # imports mlx: only when measuring

    monitor = ResourceMonitor(settings.defaults)
    snap = monitor.snapshot(fresh=True)
    return {
        "total_gb": round(snap.total_gb, 2),
        "available_gb": round(snap.available_gb, 2),
        "swap_percent": snap.swap_percent,
        "pressure": snap.pressure,
        "device_memory_gb": round(snap.device_memory_gb, 2) if snap.device_memory_gb else None,
        "budget_gb": gb(monitor.budget_bytes()),
    }


def render(report: dict[str, Any]) -> list[str]:
    """The report as text lines."""
    m, s = report["machine"], report["settings"]
    t = s["memory_threshold_gb"]
    how = (
        "memory_budget_gb"
        if s["memory_budget_gb"] is not None
        else f"memory_budget_gb unset: total less memory_threshold_gb {t:g}, at least half the total"
    )
    lines = [
        f"Machine: {m['total_gb']:.2f} GB total, {m['available_gb']:.2f} GB available, "
        f"swap {m['swap_percent']:.0f}% used; pressure now: {m['pressure']}",
        f"  pressure: moderate below {t:g} GB available, high below {t * 0.5:g} GB or swap >= "
        f"{s['swap_high_percent']:g}%, critical below {t * 0.25:g} GB or swap >= "
        f"{s['swap_critical_percent']:g}%",
        f"Model budget: {m['budget_gb']:.2f} GB ({how})",
        "",
    ]
    models = report["models"]
    if not models:
        return [*lines, "no models found"]
    width = max(len("model"), *(len(x["id"]) for x in models))
    lines.append(
        f"{'model':<{width}}  {'weights':>8}  {'estimate':>8}  {'KV/1k tok':>9}  "
        f"{'KV@max_tokens':>20}  requests@max beside it"
    )
    for x in models:
        per_k = f"{x['kv_bytes_per_token'] * 1000 / GB:.3f} GB" if x["kv_bytes_per_token"] else "?"
        at_max = f"{x['kv_at_max_tokens_gb']:.2f} GB ({x['max_tokens']})" if x["kv_bytes_per_token"] else "?"
        beside = "?" if x["requests_beside_it"] is None else str(x["requests_beside_it"])
        mark = "*" if x["basis"] == "required_memory_gb" else " "
        lines.append(
            f"{x['id']:<{width}}  {x['weights_gb']:>5.2f} GB  {x['estimate_gb']:>5.2f} GB{mark} "
            f"{per_k:>9}  {at_max:>20}  {beside}"
        )
    lines += [
        f"estimate = weights (* required_memory_gb) x safety_margin {s['safety_margin']:g}; "
        "KV is reserved per request for prompt + max_tokens",
        f"Models that fit in the budget together: {report['fit_together']} (cache_size is {s['cache_size']}; "
        "loading one more unloads the least recently used idle model)",
    ]
    too_big = [x["id"] for x in models if x["estimate_gb"] > m["budget_gb"]]
    if too_big:
        lines.append(f"Cannot load at all with this budget (503): {', '.join(too_big)}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    p = argparse.ArgumentParser(
        prog="memory_report.py",
        description="Print each installed model's memory estimate (weights x safety_margin), its KV cache "
        "cost and this machine's memory, to choose cache_size, memory_budget_gb and max_tokens.",
    )
    add_config_arguments(p)
    p.add_argument("--no-hf-cache", action="store_true", help="leave out models in the Hugging Face cache")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_tool_settings(args.config)
    except ConfigError as e:
        print(f"memory_report: {e}", file=sys.stderr)
        return 2
    served = served_models(settings, args.model_dir, hf_cache=not args.no_hf_cache)  # what the server serves
    report = build_report(settings, served.sorted(), machine_memory(settings))
    print(json.dumps(report, indent=2) if args.json else "\n".join(render(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
