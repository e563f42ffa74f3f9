"""Tool-call parsers, one module per model format; `mlx_router.parsing.registry` names them."""
