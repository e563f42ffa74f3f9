"""Memory readings and the pressure level derived from them (see MEMORY_PRESSURE.md).

The system's memory comes from psutil in any process; MLX's own figures (active, cached, peak; the device's
memory) only from the process that runs MLX, so the monitor takes them from callables: MLX itself there, the
engine's latest report in the HTTP server's process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from mlx_router.config.settings import DefaultsConfig, PressureLevel

GB = 1024**3
_LEVELS: tuple[PressureLevel, ...] = ("normal", "moderate", "high", "critical")
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


MLXReadings = tuple[int, int, int]  # bytes: active, cached, peak


def mlx_readings() -> MLXReadings:
    """MLX's memory figures, read in the process that runs MLX."""
    import mlx.core as mx

    return mx.get_active_memory(), mx.get_cache_memory(), mx.get_peak_memory()


def device_memory_bytes() -> int | None:
    """Memory of the accelerator MLX runs on (Metal/CUDA), or None where MLX does not report it (CPU)."""
    import mlx.core as mx

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

    def __init__(
        self,
        cfg: DefaultsConfig,
        max_age: float = 0.5,
        mlx: Callable[[], MLXReadings] = mlx_readings,
        device_memory: Callable[[], int | None] = device_memory_bytes,
        group_budget: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._cfg = cfg
        self._max_age = max_age
        self._mlx = mlx
        self._device_memory = device_memory
        self._last: MemorySnapshot | None = None
        self._last_at = 0.0
        # In a distributed group: the group's budget (ranks x the smallest rank's), which every rank and the
        # HTTP side count the whole model's weights and KV caches against.
        self._group_budget = group_budget

    def snapshot(self, fresh: bool = False) -> MemorySnapshot:
        now = time.monotonic()
        if not fresh and self._last is not None and now - self._last_at < self._max_age:
            return self._last
        vm = psutil.virtual_memory()
        swap_percent = _swap_percent()
        available_gb = vm.available / GB
        dev = self._device_memory()
        active, cached, peak = self._mlx()
        snap = MemorySnapshot(
            total_gb=vm.total / GB,
            available_gb=available_gb,
            used_percent=vm.percent,
            swap_percent=swap_percent,
            mlx_active_gb=active / GB,
            mlx_cache_gb=cached / GB,
            mlx_peak_gb=peak / GB,
            device_memory_gb=dev / GB if dev else None,
            pressure=pressure_level(available_gb, swap_percent, self._cfg),
        )
        if self._last is not None and snap.pressure != self._last.pressure:
            rising = _LEVELS.index(snap.pressure) > _LEVELS.index(self._last.pressure)
            logger.log(
                logging.WARNING if rising else logging.INFO,  # easing off is good news
                "memory pressure %s -> %s (%.1f GB available, swap %.0f%%)",
                self._last.pressure,
                snap.pressure,
                available_gb,
                swap_percent,
            )
        self._last, self._last_at = snap, now
        return snap

    def budget_bytes(self) -> int:
        """Memory the loaded models (weights plus KV caches) may use in all (in a group: on all ranks)."""
        return self._group_budget() or self.own_budget_bytes()

    def own_budget_bytes(self) -> int:
        """This machine's share of the budget."""
        if self._cfg.memory_budget_gb is not None:
            return int(self._cfg.memory_budget_gb * GB)
        total = self._device_memory() or psutil.virtual_memory().total
        return max(int(total - self._cfg.memory_threshold_gb * GB), int(total * 0.5))


def _swap_percent() -> float:
    try:
        swap = psutil.swap_memory()
    except (OSError, RuntimeError):
        return 0.0
    return swap.percent if swap.total > 0 else 0.0
