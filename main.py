"""`python main.py --config config.json`: the same as the `mlx-router` command."""

from mlx_router.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
