"""macOS: a launchd user agent (~/Library/LaunchAgents/com.mlx-router.server.plist) in domain gui/<uid>.

The agent starts when it is bootstrapped and at each login (RunAtLoad), and launchd starts it again when it
exits with an error or crashes, at most every ThrottleInterval seconds. A clean exit (status 0) stays down.
"""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path
from typing import Any

from mlx_router.service.actions import Action, Command, MakeDir, RemoveFile, WriteFile
from mlx_router.service.spec import LAUNCHD_LABEL, ServiceSpec, service_log_dir

THROTTLE_SECONDS = 10
# launchd's default is 20 s before SIGKILL; the server may take 10 s to finish streams and more to unload.
EXIT_TIMEOUT_SECONDS = 40


def plist_path(home: Path) -> Path:
    """Where the agent's plist lives."""
    return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def log_dir(home: Path) -> Path:
    """Where the agent's stdout and stderr go, beside the server's own log files (launchd does not expand `~`,
    so paths are absolute)."""
    return service_log_dir("launchd", home, {})


def log_files(home: Path) -> tuple[Path, Path]:
    """(stdout log, stderr log): what escapes the server's logging (a crash's last words); its log records go
    to the rotating mlx_router.log and mlx_router.error.log beside them."""
    return log_dir(home) / "mlx-router.out.log", log_dir(home) / "mlx-router.err.log"


def plist_dict(spec: ServiceSpec, home: Path) -> dict[str, Any]:
    """The agent's property list as a dict."""
    out_log, err_log = log_files(home)
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": spec.program_arguments(),
        "WorkingDirectory": spec.working_dir,
        "EnvironmentVariables": dict(spec.environment),
        "RunAtLoad": True,
        # Restart after a non-zero exit or a crash signal; a deliberate clean exit stays down.
        "KeepAlive": {"SuccessfulExit": False, "Crashed": True},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ExitTimeOut": EXIT_TIMEOUT_SECONDS,
        # Unset, launchd throttles the job's CPU and I/O like a background task; a server answering
        # interactive clients must not be slowed down.
        "ProcessType": "Interactive",
        "StandardOutPath": str(out_log),
        "StandardErrorPath": str(err_log),
    }


def render_plist(spec: ServiceSpec, home: Path) -> str:
    """The plist file's text (XML; plistlib escapes &, < and > in paths)."""
    return plistlib.dumps(plist_dict(spec, home), fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")


def _target(uid: int) -> str:
    return f"gui/{uid}/{LAUNCHD_LABEL}"


def install_plan(spec: ServiceSpec, home: Path, uid: int) -> list[Action]:
    """Write the plist and (re)load it: an agent loaded from an older plist is booted out first."""
    path = plist_path(home)
    return [
        MakeDir(path.parent),
        MakeDir(log_dir(home)),
        Command(("launchctl", "bootout", _target(uid)), check=False),  # not loaded yet: fails, harmless
        WriteFile(path, render_plist(spec, home)),
        Command(("launchctl", "enable", _target(uid))),  # a disabled label refuses to bootstrap
        Command(("launchctl", "bootstrap", f"gui/{uid}", str(path))),
    ]


def uninstall_plan(home: Path, uid: int) -> list[Action]:
    """Stop and unload the agent, then delete its plist.

    No `launchctl disable`: that writes a lasting override for the label, and with the plist gone nothing
    loads the agent again anyway.
    """
    return [
        Command(("launchctl", "bootout", _target(uid)), check=False),
        RemoveFile(plist_path(home)),
    ]


def status_command(uid: int) -> Command:
    """The command that shows the agent's state, pid and last exit status."""
    return Command(("launchctl", "print", _target(uid)), check=False)


def install_notes(home: Path, uid: int) -> list[str]:
    """What to tell the user after an install."""
    _, err_log = log_files(home)
    main_log = log_dir(home) / "mlx_router.log"
    return [
        f"The agent runs now and starts at every login; logs: {main_log} (warnings and errors also in "
        f"mlx_router.error.log, a crash's output in {err_log.name})",
        f"  follow them:            tail -f {shlex.quote(str(main_log))}",
        f"  restart (config edits): launchctl kickstart -k {_target(uid)}",
        "  stop and remove it:     mlx-router service uninstall (or ./uninstall-launchd.sh)",
    ]
