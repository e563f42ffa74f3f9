"""Command-line helpers for mlx-router users: download, convert and size up MLX models.

Run them as files (`python helper_tools/mlx_downloader.py --help`) or as modules
(`python -m helper_tools.mlx_downloader --help`) from the checkout.
"""
