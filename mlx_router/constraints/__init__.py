"""Constrained decoding: grammars for `response_format` and `tool_choice`, compiled by llguidance.

Grammar building here is pure Python; the logits processor that applies a grammar's token mask to MLX logits
lives in `mlx_router.core.constrained`.
"""
