"""Link models between mlx-router's model folder and LM Studio's, both ways, with symbolic links only.

    python helper_tools/lmstudio_linker.py from-lmstudio --dry-run   # LM Studio's MLX models -> <model_dir>
    python helper_tools/lmstudio_linker.py to-lmstudio               # served models -> ~/.lmstudio/models

The same as `mlx-router models link` (mlx_router/tools/lmstudio.py): nothing is copied and nothing that is
already at a link's place is replaced.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout (mlx_router, helper_tools) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_router.tools.cli import command_parser, run  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    return run(command_parser("link", "lmstudio_linker.py").parse_args(argv), "link")


if __name__ == "__main__":
    raise SystemExit(main())
