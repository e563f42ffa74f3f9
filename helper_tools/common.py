"""What the helper tools share: reading the server's config and finding its model folder (mlx_router.tools)."""

from mlx_router.tools.common import (
    DEFAULT_CONFIG,
    FALLBACK_MODEL_DIR,
    ServedModels,
    add_config_arguments,
    describe_sources,
    discovery,
    gb,
    load_tool_settings,
    model_dir,
    served_models,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FALLBACK_MODEL_DIR",
    "ServedModels",
    "add_config_arguments",
    "describe_sources",
    "discovery",
    "gb",
    "load_tool_settings",
    "model_dir",
    "served_models",
]
