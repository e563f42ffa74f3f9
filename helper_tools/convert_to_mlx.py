"""Convert (and by default quantize) a Hugging Face model folder to MLX, into the server's model folder.

    python helper_tools/convert_to_mlx.py ~/hf/Qwen3-4B                   -> <model_dir>/Qwen3-4B-4bit
    python helper_tools/convert_to_mlx.py ~/hf/Qwen3-4B --bits 8 --name me/Qwen3-4B-8bit

A thin wrapper around `mlx_lm.convert`. The source must be a local folder: this tool never downloads (get the
original weights first, e.g. with mlx_downloader.py into another folder). Converting needs about the
unquantized model's size in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout (mlx_router, helper_tools) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helper_tools.common import add_config_arguments, gb, load_tool_settings, model_dir  # noqa: E402
from mlx_router.config.discovery import ModelDiscovery, is_valid_model_id  # noqa: E402
from mlx_router.config.settings import ConfigError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    p = argparse.ArgumentParser(
        prog="convert_to_mlx.py",
        description="Convert a local Hugging Face model folder to MLX (quantized by default) with "
        "mlx_lm.convert, writing <model_dir>/<name>.",
    )
    p.add_argument("source", help="local folder with the original model (config.json, *.safetensors, tokenizer)")
    add_config_arguments(p)
    p.add_argument("--name", help="model id of the result: name or org/name (default: <source>-<bits>bit)")
    p.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 5, 6, 8], help="bits per weight (default 4)")
    p.add_argument("--group-size", type=int, default=64, help="weights sharing one scale (default 64)")
    p.add_argument(
        "--q-mode",
        default="affine",
        choices=["affine", "mxfp4", "nvfp4", "mxfp8"],
        help="quantization mode (default affine)",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        help="dtype of the weights left unquantized (default: the model's)",
    )
    p.add_argument("--no-quantize", action="store_true", help="convert only, keeping full-precision weights")
    return p


def output_name(source: Path, name: str | None, bits: int, quantize: bool) -> str:
    """The model id of the result; a ValueError when `name` could not be a model id."""
    result = name or f"{source.resolve().name}-{f'{bits}bit' if quantize else 'mlx'}"
    if not is_valid_model_id(result):
        raise ValueError(f"{result!r} cannot be a model id: use name or org/name")
    return result


def convert(source: Path, destination: Path, args: argparse.Namespace) -> None:
    """Run mlx_lm.convert offline (HF_HUB_OFFLINE=1: a source that is not local fails, never downloads)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from mlx_lm import convert as mlx_convert

    destination.parent.mkdir(parents=True, exist_ok=True)
    mlx_convert(
        str(source),
        mlx_path=str(destination),
        quantize=not args.no_quantize,
        q_group_size=args.group_size,
        q_bits=args.bits,
        q_mode=args.q_mode,
        dtype=args.dtype,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    args = build_parser().parse_args(argv)
    source = Path(args.source).expanduser()
    try:
        settings = load_tool_settings(args.config)
        if not (source / "config.json").is_file():
            raise ValueError(
                f"{source} is not a local model folder (no config.json); this tool does not "
                "download: fetch the model first"
            )
        name = output_name(source, args.name, args.bits, not args.no_quantize)
    except (ConfigError, ValueError) as e:
        print(f"convert_to_mlx: {e}", file=sys.stderr)
        return 2
    root = model_dir(settings, args.model_dir)
    destination = root.joinpath(*name.split("/"))
    if destination.exists():
        print(f"convert_to_mlx: {destination} exists already; remove it or pick another --name", file=sys.stderr)
        return 1
    print(f"converting {source} -> {destination}")
    convert(source, destination, args)
    entry = ModelDiscovery([root]).resolve(name)
    if entry is None:
        print(f"convert_to_mlx: the result in {destination} is not a loadable model", file=sys.stderr)
        return 1
    print(f'installed {entry.id} ({gb(entry.size_bytes):.2f} GB of weights); request it as "model": "{entry.id}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
