"""Parameter discovery: measure a model on this machine and propose its `models.<id>` entry.

    python helper_tools/model_tuner.py mlx-community/Qwen3-8B-4bit            # print the entry
    python helper_tools/model_tuner.py mlx-community/Qwen3-8B-4bit --write    # and put it into config.json

The same as `mlx-router models tune` (mlx_router/tools/tune.py): reads config.json and generation_config.json,
loads the model for a short prefill and decode (mlx-lm, or mlx-vlm for vision models), and sets max_tokens,
sampling defaults, required_memory_gb, supports_tools and supports_vision.
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
    return run(command_parser("tune", "model_tuner.py").parse_args(argv), "tune")


if __name__ == "__main__":
    raise SystemExit(main())
