"""`mlx-router models list|download|link|tune`: the models the server serves, and tools to add and tune them.

Every command reads the server's config (--config, else ./config.json when present) and model folder
(--model-dir, MLX_MODEL_DIR, defaults.model_directory), so it sees what the server sees, the built-in demo
models included when nothing else is installed. helper_tools/ runs the same commands as files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TextIO

from mlx_router.config.settings import ConfigError, Settings
from mlx_router.tools import lmstudio
from mlx_router.tools.common import (
    add_config_arguments,
    config_path,
    gb,
    load_tool_settings,
    model_dir,
    served_models,
)
from mlx_router.tools.download import DownloadError, install, list_lines
from mlx_router.tools.tune import TuneError, measurement_lines, read_facts, recommend, write_entry

Run = Callable[[argparse.Namespace, Settings, TextIO], int]


def _configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-hf-cache", action="store_true", help="leave out models in the Hugging Face cache")
    p.add_argument("--json", action="store_true", help="print the models as JSON")


def _run_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    served = served_models(settings, args.model_dir, hf_cache=not args.no_hf_cache)
    if args.json:
        rows = [
            {
                "id": e.id,
                "size_gb": gb(e.size_bytes),
                "source": served.source(e),
                "vision": e.vision,
                "path": str(e.path),
            }
            for e in served.sorted()
        ]
        print(json.dumps(rows, indent=2), file=out)
    else:
        print("\n".join(list_lines(served)), file=out)
    return 0


def _configure_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="hub repository, e.g. mlx-community/Qwen3-8B-4bit")
    p.add_argument("--revision", help="branch, tag or commit to download (default: main)")


def _run_download(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        install(args.repo, model_dir(settings, args.model_dir), settings, args.revision, out)
    except (ValueError, DownloadError) as e:
        print(f"mlx-router models download: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # network, authentication, unknown repository: the hub's message says which
        print(f"mlx-router models download: the download failed: {e}", file=sys.stderr)
        return 1
    return 0


def _configure_link(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "direction",
        choices=["from-lmstudio", "to-lmstudio"],
        help="from-lmstudio: link LM Studio's MLX models into this server's model folder; "
        "to-lmstudio: link the models this server serves into LM Studio's folder",
    )
    p.add_argument("models", nargs="*", metavar="ID", help="only these models (default: all)")
    p.add_argument(
        "--lmstudio-dir",
        metavar="DIR",
        help=f"LM Studio's model folder (default: ${lmstudio.LMSTUDIO_ENV}, else the first that exists of "
        f"{', '.join(lmstudio.LMSTUDIO_DIRS)})",
    )
    p.add_argument("--dry-run", action="store_true", help="print the links it would make, and make none")


def _run_link(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        lms = lmstudio.lmstudio_dir(args.lmstudio_dir)
        if args.direction == "from-lmstudio":
            if not lms.is_dir():
                raise lmstudio.LinkError(f"{lms} does not exist")
            root = model_dir(settings, args.model_dir)
            steps = lmstudio.plan_from_lmstudio(lms, root, args.models)
        else:
            root = lms
            served = served_models(settings, args.model_dir)
            if served.demo and not args.models:  # toys: linked only when named
                print("only the built-in demo models are served; name them to link them", file=out)
            entries = [] if served.demo and not args.models else served.sorted()
            steps = lmstudio.plan_to_lmstudio(entries, lms, args.models)
    except lmstudio.LinkError as e:
        print(f"mlx-router models link: {e}", file=sys.stderr)
        return 2
    print(f"{args.direction}: links in {root}", file=out)
    status = lmstudio.execute(steps, out, dry_run=args.dry_run)
    if args.direction == "from-lmstudio" and not args.model_dir and settings.defaults.model_directory is None:
        print(f"note: the server reads no model folder; set defaults.model_directory to {root}", file=out)
    return status


def _configure_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="ID", help="a model the server serves (see `mlx-router models list`)")
    p.add_argument(
        "--write",
        action="store_true",
        help="write the entry into the config file (--config, else ./config.json) instead of only printing it",
    )
    p.add_argument("--force", action="store_true", help="with --write: replace the keys of an existing entry")
    p.add_argument("--no-measure", action="store_true", help="read the files only; load nothing")
    p.add_argument("--prompt-tokens", type=int, default=256, help="prompt length measured (default 256)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded when measuring (default 32)")
    p.add_argument("--json", action="store_true", help="print the entry, measurement and notes as JSON")


def _run_tune(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    served = served_models(settings, args.model_dir)
    entry = served.entries.get(args.model)
    if entry is None and args.model in served.skipped:
        print(f"mlx-router models tune: {args.model} is not served: {served.skipped[args.model]}", file=sys.stderr)
        return 1
    if entry is None:
        known = ", ".join(sorted(served.entries)) or "none"
        print(f"mlx-router models tune: no model {args.model!r}; the server serves: {known}", file=sys.stderr)
        return 1
    from mlx_router.engine.resource_monitor import ResourceMonitor  # imports mlx

    try:
        facts = read_facts(entry, settings)
        measurement = None
        if not args.no_measure:
            from mlx_router.core.measure import measure_model

            vision = facts.vision_path is not None
            measurement = measure_model(entry.path, vision, args.prompt_tokens, args.decode_tokens)
    except Exception as e:  # a folder no loader understands, a broken tokenizer: the reason, not a trace
        print(f"mlx-router models tune: {entry.id} could not be read or measured: {e}", file=sys.stderr)
        return 1
    tuning = recommend(facts, measurement, settings, ResourceMonitor(settings.defaults).budget_bytes())
    if args.json:
        report = {
            "model": entry.id,
            "entry": tuning.entry,
            "measurement": asdict(measurement) if measurement else None,
            "notes": tuning.notes,
        }
        print(json.dumps(report, indent=2), file=out)
    else:
        lines = [f"{entry.id} ({entry.path})"]
        lines += measurement_lines(measurement) if measurement else ["not measured (--no-measure)"]
        lines += [f"  {note}" for note in tuning.notes]
        lines.append(json.dumps({entry.id: tuning.entry}, indent=2))
        print("\n".join(lines), file=out)
    if not args.write:
        return 0
    path = config_path(args.config)
    try:
        replaced = write_entry(path, entry.id, tuning.entry, args.force)
    except (TuneError, OSError) as e:
        print(f"mlx-router models tune: {e}", file=sys.stderr)
        return 1
    print(f"{'updated' if replaced else 'wrote'} models.{entry.id} in {path}", file=sys.stderr if args.json else out)
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Run]] = {
    "list": ("list the models the server serves (no network)", _configure_list, _run_list),
    "download": (
        "download an MLX model from the Hugging Face hub into the model folder",
        _configure_download,
        _run_download,
    ),
    "link": (
        "link models between this server's model folder and LM Studio's (symlinks, never copies)",
        _configure_link,
        _run_link,
    ),
    "tune": ("measure a model and propose (or --write) its models.<id> entry", _configure_tune, _run_tune),
}


def command_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """The parser of one command on its own (helper_tools/ runs them as files)."""
    help_text, configure, _ = COMMANDS[name]
    p = argparse.ArgumentParser(prog=prog, description=help_text[0].upper() + help_text[1:] + ".")
    configure(p)
    add_config_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The `mlx-router models` argument parser."""
    p = argparse.ArgumentParser(
        prog="mlx-router models",
        description="The models this server serves (as it finds them: --config, MLX_MODEL_DIR, --model-dir), "
        "and tools to add and tune them.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (help_text, configure, _) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        configure(child)
        add_config_arguments(child)
    return p


def run(args: argparse.Namespace, name: str, out: TextIO | None = None) -> int:
    """Run the parsed command `name`; the exit status."""
    out = out or sys.stdout
    if not logging.getLogger().handlers:  # discovery's notes (a folder that does not exist, ...) on stderr
        logging.basicConfig(level=logging.WARNING, format="mlx-router models: %(message)s")
    if name != "download":  # only a download may use the network; a tokenizer or model loads local files only
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        settings = load_tool_settings(args.config)
    except ConfigError as e:
        print(f"mlx-router models: invalid configuration\n{e}", file=sys.stderr)
        return 2
    return COMMANDS[name][2](args, settings, out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of `mlx-router models ...`; the exit status."""
    args = build_parser().parse_args(argv)
    return run(args, args.command, out)
