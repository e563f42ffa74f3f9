"""Linux: a systemd user unit (`~/.config/systemd/user/mlx-router.service`), managed with `systemctl --user`.

The unit starts with the user's systemd instance (at login, or at boot with `loginctl enable-linger $USER`)
and restarts after a failure. Exit status 2 (a bad config or command line) is not retried: starting again
would fail the same way. Output goes to the journal: `journalctl --user -u mlx-router -f`.
"""

from __future__ import annotations

from pathlib import Path

from mlx_router.service.actions import Action, Command, MakeDir, RemoveFile, WriteFile
from mlx_router.service.spec import SYSTEMD_UNIT, ServiceError, ServiceSpec

RESTART_SECONDS = 5
# The server may take 10 s to finish streams and more to unload models before it exits.
STOP_TIMEOUT_SECONDS = 40
CONFIG_ERROR_STATUS = 2  # mlx_router.cli exits 2 on an invalid configuration (argparse does too)
_NEEDS_QUOTES = frozenset(" \t\"'\\;")


def unit_path(home: Path) -> Path:
    """Where the user unit lives."""
    return home / ".config" / "systemd" / "user" / SYSTEMD_UNIT


def quote_exec_arg(arg: str) -> str:
    """One ExecStart= argument: double-quoted when it holds spaces, quotes, backslashes or `;`.

    Inside quotes systemd reads C escapes, so `\\` and `"` are escaped; `%` starts a specifier and `$` an
    environment variable anywhere on the line, so they are doubled either way.
    """
    doubled = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(ch in _NEEDS_QUOTES for ch in arg):
        return doubled
    escaped = doubled.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def quote_exec_program(path: str) -> str:
    """ExecStart='s first word, the executable: specifiers expand in it, `$` does not, and systemd refuses
    one whose path holds a quote or a backslash."""
    if any(ch in "\"'\\" for ch in path):
        raise ServiceError(
            f"systemd cannot run an executable whose path holds quotes or backslashes: "
            f"{path!r}; install mlx-router in a folder without them"
        )
    doubled = path.replace("%", "%%")
    return f'"{doubled}"' if any(ch in _NEEDS_QUOTES for ch in path) else doubled


def quote_environment(name: str, value: str) -> str:
    """One Environment= assignment, double-quoted (specifiers expand here too; `$` does not)."""
    text = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{text}"'


def escape_path_setting(path: str) -> str:
    """A path setting such as WorkingDirectory=: taken verbatim (spaces included) after specifiers."""
    return path.replace("%", "%%")


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text."""
    program, *args = spec.program_arguments()
    exec_start = " ".join([quote_exec_program(program), *(quote_exec_arg(a) for a in args)])
    environment = [f"Environment={quote_environment(k, v)}" for k, v in spec.environment]
    lines = [
        "# Written by `mlx-router service install`; `mlx-router service uninstall` removes it.",
        "[Unit]",
        "Description=mlx-router: OpenAI-compatible server for MLX models",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={escape_path_setting(spec.working_dir)}",
        *environment,
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}",
        f"RestartPreventExitStatus={CONFIG_ERROR_STATUS}",
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def _systemctl(*args: str, check: bool = True) -> Command:
    return Command(("systemctl", "--user", *args), check=check)


def install_plan(spec: ServiceSpec, home: Path) -> list[Action]:
    """Write the unit, enable it, and (re)start it: a re-install restarts a running server with the new unit
    (`enable --now` would leave the old process running)."""
    path = unit_path(home)
    return [
        MakeDir(path.parent),
        WriteFile(path, render_unit(spec)),
        _systemctl("daemon-reload"),
        _systemctl("enable", SYSTEMD_UNIT),
        _systemctl("restart", SYSTEMD_UNIT),
    ]


def uninstall_plan(home: Path) -> list[Action]:
    """Stop and disable the unit, delete it, and make systemd forget it."""
    return [
        _systemctl("disable", "--now", SYSTEMD_UNIT, check=False),  # not installed: fails, harmless
        RemoveFile(unit_path(home)),
        _systemctl("daemon-reload"),
        _systemctl("reset-failed", SYSTEMD_UNIT, check=False),  # clears a failed state; fails when none
    ]


def status_command() -> Command:
    """The command that shows the unit's state and its last log lines."""
    return _systemctl("status", "--no-pager", "--lines=20", SYSTEMD_UNIT, check=False)


def install_notes(log_dir: Path | None = None) -> list[str]:
    """What to tell the user after an install (`log_dir`: where the server writes its log files)."""
    files = [f"  log files:              {log_dir / 'mlx_router.log'} (and mlx_router.error.log)"] if log_dir else []
    return [
        "The service runs now and starts with your user session.",
        "  follow its log:         journalctl --user -u mlx-router -f",
        *files,
        "  restart (config edits): systemctl --user restart mlx-router",
        "  start at boot, without logging in: loginctl enable-linger $USER",
        "  stop and remove it:     mlx-router service uninstall (or python -m mlx_router service uninstall)",
    ]
