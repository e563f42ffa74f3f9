"""`mlx-router service install|uninstall|status`: run the server as an always-on user service.

launchd on macOS, systemd (user units) on Linux; `--platform` picks one explicitly (e.g. to preview the other
with `--dry-run`). Nothing here needs root.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from mlx_router.config.settings import ConfigError, Settings, load_settings
from mlx_router.service import launchd, systemd
from mlx_router.service.actions import Action, execute
from mlx_router.service.spec import ServiceError, current_spec, default_platform, service_log_dir
from mlx_router.service.status import NOT_RUNNING, ask_manager, health_url, no_manager_note, probe_health


def build_parser() -> argparse.ArgumentParser:
    """The `mlx-router service` argument parser."""
    p = argparse.ArgumentParser(
        prog="mlx-router service",
        description="Run mlx-router as a user service that starts at login and restarts after a crash "
        "(launchd on macOS, systemd --user on Linux).",
        epilog="On Linux, `loginctl enable-linger $USER` starts user services at boot, before any login.",
    )
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default="config.json",
        help="config.json the service runs with (default: ./config.json); status shows its URL",
    )
    p.add_argument("--platform", choices=["launchd", "systemd"], help="service manager (default: this OS's)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files and commands instead of writing and running them",
    )
    return p


def plan(action: str, platform: str, config: str, home: Path, uid: int) -> list[Action]:
    """The actions of `install` or `uninstall` on `platform`."""
    if action == "install":
        spec = current_spec(config, platform)
        if platform == "launchd":
            return launchd.install_plan(spec, home, uid)
        return systemd.install_plan(spec, home)
    if platform == "launchd":
        return launchd.uninstall_plan(home, uid)
    return systemd.uninstall_plan(home)


def _check_config(config: str) -> str:
    """Load the config as the server will, so a bad file fails here and not in a restart loop. The URL."""
    settings = load_settings(os.path.abspath(os.path.expanduser(config)))
    return f"http://{settings.server.ip}:{settings.server.port}"


def _status(platform: str, config: str, home: Path, uid: int, out: TextIO, dry_run: bool) -> int:
    """The service file, the server's health over HTTP, and the service manager's view when it can be asked.
    The exit status is the manager's; where it cannot answer (no user bus), 0 when the server is up, else 3."""
    path = launchd.plist_path(home) if platform == "launchd" else systemd.unit_path(home)
    print(f"service file: {path} ({'present' if path.exists() else 'not installed'})", file=out)
    try:
        settings = load_settings(os.path.abspath(os.path.expanduser(config)))
    except ConfigError as e:  # status works without a readable config: the default address is tried
        print(f"config:       {str(e).splitlines()[0]}; using the default address", file=out)
        settings = Settings()
    command = launchd.status_command(uid) if platform == "launchd" else systemd.status_command()
    if dry_run:
        print(f"health:       {health_url(settings)}", file=out)
        print(f"$ {shlex.join(command.argv)}", file=out)
        return 0
    health = probe_health(settings)
    print(f"health:       {health.url}: {health.summary}", file=out)
    print(f"$ {shlex.join(command.argv)}", file=out)
    answer = ask_manager(command.argv, platform)
    if answer.output:
        out.write(answer.output if answer.output.endswith("\n") else answer.output + "\n")
    if answer.answered:
        return answer.status
    print(no_manager_note(platform, answer), file=out)
    return 0 if health.up else NOT_RUNNING


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of `mlx-router service ...`; the exit status."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    home, uid = Path.home(), os.getuid()
    try:
        platform = args.platform or default_platform()
        if args.action == "status":
            return _status(platform, args.config, home, uid, out, args.dry_run)
        url = _check_config(args.config) if args.action == "install" else None
        actions = plan(args.action, platform, args.config, home, uid)
    except (ServiceError, ConfigError) as e:
        print(f"mlx-router service: {e}", file=sys.stderr)
        return 2
    status = execute(actions, out, dry_run=args.dry_run)
    if status != 0 and platform == "systemd":
        print(
            "if systemctl could not connect to the bus: user services need your login session's systemd "
            "(over ssh, run `loginctl enable-linger $USER` and log in again)",
            file=out,
        )
    if status != 0 or args.dry_run:
        return status
    if url is not None:
        if platform == "launchd":
            notes = launchd.install_notes(home, uid)
        else:
            notes = systemd.install_notes(service_log_dir(platform, home, os.environ))
        print("\n".join([*notes, f"  check it:               curl {url}/v1/health"]), file=out)
    else:
        print("The service is stopped and removed (logs and the config are kept).", file=out)
    return 0
