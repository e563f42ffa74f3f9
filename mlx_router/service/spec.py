"""What a user service runs: interpreter, arguments, working folder and environment, as one value.

`build_spec` is pure (every input is an argument) so that the unit files rendered from a spec can be checked
byte for byte; `current_spec` fills those inputs from the running interpreter and the environment.
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx_router

LAUNCHD_LABEL = "com.mlx-router.server"
SYSTEMD_UNIT = "mlx-router.service"

# Directories a service's PATH gets after the interpreter's bin folder: launchd and systemd start jobs with
# a minimal PATH, and tools a user adds may live in Homebrew's /opt/homebrew/bin.
SYSTEM_PATHS = {
    "launchd": ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"),
    "systemd": ("/usr/local/bin", "/usr/bin", "/bin"),
}
# Variables copied from the installing shell when set: they steer where the server finds models.
PASSED_THROUGH = ("MLX_MODEL_DIR", "HF_HOME", "HF_HUB_CACHE")


class ServiceError(ValueError):
    """The service cannot be set up as asked; the message says why."""


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a launchd job or systemd unit needs to start the server."""

    python: str
    config: str
    working_dir: str
    environment: tuple[tuple[str, str], ...]
    log_dir: str | None = None  # the server's rotating log files (observability/logs.py)
    console_log: bool = True  # also to stderr (launchd writes that to a file it never rotates)

    def program_arguments(self) -> list[str]:
        """argv of the server: `<python> -m mlx_router --config <config>` (serve, the default command), with
        `--log-dir <dir>` and `--no-console-log` where the spec asks for them."""
        argv = [self.python, "-m", "mlx_router", "--config", self.config]
        if self.log_dir is not None:
            argv += ["--log-dir", self.log_dir]
        if not self.console_log:
            argv.append("--no-console-log")
        return argv


def check_path(value: str, what: str) -> str:
    """`value` if it is an absolute path without control characters (unit files cannot carry those)."""
    if not os.path.isabs(value):
        raise ServiceError(f"{what} must be an absolute path, got {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ServiceError(f"{what} contains a control character (newline, tab ...): {value!r}")
    return value


def build_spec(
    config: str,
    python: str,
    platform: str,
    environ: Mapping[str, str],
    package_root: str,
    site_dirs: Sequence[str],
    log_dir: str | None = None,
) -> ServiceSpec:
    """The spec for `platform` ("launchd" or "systemd").

    `python` is used as given, not resolved: a virtualenv's `bin/python` is a symlink to the base
    interpreter, and following it would start Python without the venv's packages. `package_root` (the folder
    holding `mlx_router/`) goes on PYTHONPATH unless it is a site-packages folder, so a source checkout that
    was never pip-installed still imports from any working folder. With `log_dir` the server writes rotating
    log files there; under launchd, whose stderr file is never rotated, they replace the console.
    """
    if platform not in SYSTEM_PATHS:
        raise ServiceError(f"unknown service platform {platform!r}; valid: {', '.join(SYSTEM_PATHS)}")
    check_path(python, "the Python interpreter")
    check_path(config, "the config file")
    env: dict[str, str] = {}
    path_dirs = [os.path.dirname(python), *SYSTEM_PATHS[platform]]
    env["PATH"] = os.pathsep.join(dict.fromkeys(path_dirs))  # de-duplicated, order kept
    env["HF_HUB_OFFLINE"] = "1"  # the server never downloads; models are installed beforehand
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file or journal as they are written
    if os.path.normpath(package_root) not in {os.path.normpath(d) for d in site_dirs}:
        env["PYTHONPATH"] = check_path(package_root, "the mlx_router package folder")
    for name in PASSED_THROUGH:
        if environ.get(name):
            env[name] = check_path(os.path.abspath(os.path.expanduser(environ[name])), name)
    return ServiceSpec(
        python=python,
        config=config,
        working_dir=check_path(os.path.dirname(config), "the config folder"),
        environment=tuple(env.items()),
        log_dir=check_path(log_dir, "the log folder") if log_dir is not None else None,
        console_log=not (log_dir is not None and platform == "launchd"),
    )


def service_log_dir(platform: str, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the service's server writes its log files: ~/Library/Logs/mlx-router on macOS (beside launchd's
    own stdout and stderr files), $XDG_STATE_HOME/mlx-router/logs (~/.local/state/...) on Linux."""
    if platform == "launchd":
        return home / "Library" / "Logs" / "mlx-router"
    state = environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(state) / "mlx-router" / "logs"


def current_spec(config: str, platform: str) -> ServiceSpec:
    """The spec for this interpreter, this environment and `config` (made absolute; it must exist)."""
    config_path = os.path.abspath(os.path.expanduser(config))
    if not os.path.isfile(config_path):
        raise ServiceError(f"config file not found: {config_path}")
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return build_spec(
        config=config_path,
        python=os.path.abspath(sys.executable),
        platform=platform,
        environ=os.environ,
        package_root=str(Path(mlx_router.__file__).resolve().parent.parent),
        site_dirs=site_dirs,
        log_dir=str(service_log_dir(platform, Path.home(), os.environ)),
    )


def default_platform(sys_platform: str = sys.platform) -> str:
    """launchd on macOS, systemd on Linux."""
    if sys_platform == "darwin":
        return "launchd"
    if sys_platform.startswith("linux"):
        return "systemd"
    raise ServiceError(
        f"no user service manager known for {sys_platform!r}; run `mlx-router --config ...` under your own supervisor"
    )
