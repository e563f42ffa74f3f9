"""mlx-router: an OpenAI-compatible HTTP server for MLX models."""

__version__ = "3.0.0.dev0"
