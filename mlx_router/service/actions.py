"""The steps of an install, uninstall or status check, as values; and the one place that carries them out.

Plans are lists of actions built by pure functions (`launchd.py`, `systemd.py`), so tests read the exact
command lines. `execute` performs them, or with `dry_run` only prints them (a user-visible preview).
`run_command` is the only function here that starts launchctl or systemctl.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class MakeDir:
    """Create a folder (and its parents) if missing."""

    path: Path


@dataclass(frozen=True)
class WriteFile:
    """Write `content` to `path`, replacing what is there."""

    path: Path
    content: str


@dataclass(frozen=True)
class RemoveFile:
    """Delete a file; a missing file is fine."""

    path: Path


@dataclass(frozen=True)
class Command:
    """Run `argv`. When `check` is false a failure is reported and the plan goes on (e.g. stopping a service
    that is not running)."""

    argv: tuple[str, ...]
    check: bool = True


Action = MakeDir | WriteFile | RemoveFile | Command


def describe(action: Action) -> str:
    """One line saying what `action` does."""
    if isinstance(action, MakeDir):
        return f"mkdir -p {shlex.quote(str(action.path))}"
    if isinstance(action, WriteFile):
        return f"write {action.path}"
    if isinstance(action, RemoveFile):
        return f"rm -f {shlex.quote(str(action.path))}"
    suffix = "" if action.check else "   # may fail harmlessly"
    return f"$ {shlex.join(action.argv)}{suffix}"


def run_command(argv: Sequence[str]) -> int:
    """Run a service-manager command with the user's terminal as its output; its exit status."""
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        return 127  # the shell's "command not found"


def execute(actions: Sequence[Action], out: TextIO, dry_run: bool = False) -> int:
    """Carry out `actions` in order, printing each; stop at the first checked failure. Returns 0, or the
    exit status of the checked command that failed."""
    for action in actions:
        print(describe(action), file=out)
        if dry_run:
            if isinstance(action, WriteFile):
                out.write(_indented(action.content))
            continue
        if isinstance(action, MakeDir):
            action.path.mkdir(parents=True, exist_ok=True)
        elif isinstance(action, WriteFile):
            action.path.write_text(action.content, encoding="utf-8")
        elif isinstance(action, RemoveFile):
            action.path.unlink(missing_ok=True)
        else:
            out.flush()  # our lines first, then the command's own output
            status = run_command(action.argv)
            if status == 127:
                print(f"  {action.argv[0]}: command not found", file=out)
            if status != 0 and action.check:
                print(f"  failed with exit status {status}", file=out)
                return status
    return 0


def _indented(text: str) -> str:
    return "".join(f"    | {line}\n" for line in text.splitlines())
