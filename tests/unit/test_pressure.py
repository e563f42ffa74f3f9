"""Pressure levels from available memory and swap, with the configured thresholds."""

import pytest

from mlx_router.config.settings import DefaultsConfig
from mlx_router.engine.resource_monitor import pressure_level

CFG = DefaultsConfig(memory_threshold_gb=8, swap_high_percent=50, swap_critical_percent=80)


@pytest.mark.parametrize(
    "available, swap, level",
    [
        (20, 0, "normal"),
        (8.1, 10, "normal"),
        (7.9, 0, "moderate"),
        (3.9, 0, "high"),
        (5, 50, "high"),
        (1.9, 0, "critical"),
        (20, 80, "critical"),
        (20, 79.9, "high"),
    ],
)
def test_levels(available, swap, level):
    assert pressure_level(available, swap, CFG) == level
