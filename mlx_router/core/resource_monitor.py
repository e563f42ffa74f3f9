"""Memory readings and the pressure level derived from them (see MEMORY_PRESSURE.md)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mlx.core as mx
import psutil

from mlx_router.config.settings import DefaultsConfig, PressureLevel

GB = 1024**3
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemorySnapshot:
    total_gb: float
    available_gb: float
    used_percent: float
    swap_percent: float
    mlx_active_gb: float
    mlx_cache_gb: float
    mlx_peak_gb: float
    device_memory_gb: float | None
    pressure: PressureLevel


def device_memory_bytes() -> int | None:
    """Memory of the accelerator MLX runs on (Metal/CUDA), or None where MLX does not report it (CPU)."""
    info = mx.device_info()
    # Metal: the GPU's working-set limit is the real bound, lower than RAM on small Macs.
    for key in ("max_recommended_working_set_size", "total_memory", "memory_size"):
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def pressure_level(available_gb: float, swap_percent: float, cfg: DefaultsConfig) -> PressureLevel:
    """normal / moderate / high / critical from available memory and swap use (thresholds in the config)."""
    threshold = cfg.memory_threshold_gb
    if available_gb < threshold * 0.25 or swap_percent >= cfg.swap_critical_percent:
        return "critical"
    if available_gb < threshold * 0.5 or swap_percent >= cfg.swap_high_percent:
        return "high"
    if available_gb < threshold:
        return "moderate"
    return "normal"


class ResourceMonitor:
    """Reads memory, at most every `max_age` seconds (psutil calls are cheap but not free)."""

    def __init__(self, cfg: DefaultsConfig, max_age: float = 0.5) -> None:
        self._cfg = cfg
        self._max_age = max_age
        self._last: MemorySnapshot | None = None
        self._last_at = 0.0

    def snapshot(self, fresh: bool = False) -> MemorySnapshot:
        now = time.monotonic()
        if not fresh and self._last is not None and now - self._last_at < self._max_age:
            return self._last
        vm = psutil.virtual_memory()
        swap_percent = _swap_percent()
        available_gb = vm.available / GB
        dev = device_memory_bytes()
        snap = MemorySnapshot(
            total_gb=vm.total / GB,
            available_gb=available_gb,
            used_percent=vm.percent,
            swap_percent=swap_percent,
            mlx_active_gb=mx.get_active_memory() / GB,
            mlx_cache_gb=mx.get_cache_memory() / GB,
            mlx_peak_gb=mx.get_peak_memory() / GB,
            device_memory_gb=dev / GB if dev else None,
            pressure=pressure_level(available_gb, swap_percent, self._cfg),
        )
        if self._last is not None and snap.pressure != self._last.pressure:
            logger.warning(
                "memory pressure %s -> %s (%.1f GB available, swap %.0f%%)",
                self._last.pressure,
                snap.pressure,
                available_gb,
                swap_percent,
            )
        self._last, self._last_at = snap, now
        return snap

    def budget_bytes(self) -> int:
        """Memory the loaded models (weights plus KV caches) may use in all."""
        if self._cfg.memory_budget_gb is not None:
            return int(self._cfg.memory_budget_gb * GB)
        total = device_memory_bytes() or psutil.virtual_memory().total
        return max(int(total - self._cfg.memory_threshold_gb * GB), int(total * 0.5))


def _swap_percent() -> float:
    try:
        swap = psutil.swap_memory()
    except (OSError, RuntimeError):
        return 0.0
    return swap.percent if swap.total > 0 else 0.0
