"""The user service: unit files rendered from a spec (golden checks), the command plans, their execution on
real files and commands, the `mlx-router service` hook, and the launchd shell wrappers."""

from __future__ import annotations

import io
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_router import __version__
from mlx_router import cli as router_cli
from mlx_router.service import launchd, systemd
from mlx_router.service.actions import Command, MakeDir, RemoveFile, WriteFile, execute
from mlx_router.service.spec import ServiceError, ServiceSpec, build_spec, default_platform

REPO = Path(__file__).resolve().parents[2]
HOME = Path("/Users/ann")


def spec_for(folder: str, platform: str = "launchd", **kw: object) -> ServiceSpec:
    args: dict = {
        "config": f"{folder}/config.json",
        "python": f"{folder}/.venv/bin/python",
        "platform": platform,
        "environ": {},
        "package_root": folder,
        "site_dirs": [],
    }
    args.update(kw)
    return build_spec(**args)


# -- the spec -----------------------------------------------------------------------------------------------


def test_spec_runs_this_package_with_absolute_paths_and_offline_hub() -> None:
    spec = spec_for("/opt/mlx router", platform="systemd")
    assert spec.program_arguments() == [
        "/opt/mlx router/.venv/bin/python",
        "-m",
        "mlx_router",
        "--config",
        "/opt/mlx router/config.json",
    ]
    env = dict(spec.environment)
    assert env["PATH"].split(":")[0] == "/opt/mlx router/.venv/bin"  # the venv's tools come first
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"] == "/opt/mlx router"  # a checkout that was never pip-installed still imports
    assert spec.working_dir == "/opt/mlx router"


def test_installed_package_needs_no_pythonpath_and_shell_variables_pass_through() -> None:
    site = "/opt/venv/lib/python3.12/site-packages"
    spec = spec_for(
        "/opt/x",
        package_root=site,
        site_dirs=[site],
        environ={"MLX_MODEL_DIR": "/data/models", "HF_HOME": "", "UNRELATED": "1"},
    )
    env = dict(spec.environment)
    assert "PYTHONPATH" not in env
    assert env["MLX_MODEL_DIR"] == "/data/models"
    assert "HF_HOME" not in env and "UNRELATED" not in env


@pytest.mark.parametrize(
    ("config", "python", "message"),
    [
        ("config.json", "/usr/bin/python3", "absolute"),
        ("/a/config.json", "python3", "absolute"),
        ("/a/b\nc/config.json", "/usr/bin/python3", "control character"),
    ],
)
def test_spec_refuses_paths_a_unit_file_cannot_hold(config: str, python: str, message: str) -> None:
    with pytest.raises(ServiceError, match=message):
        build_spec(config, python, "systemd", {}, "/a", [])


def test_default_platform() -> None:
    assert default_platform("darwin") == "launchd"
    assert default_platform("linux") == "systemd"
    with pytest.raises(ServiceError):
        default_platform("win32")


# -- launchd ------------------------------------------------------------------------------------------------


def test_plist_golden() -> None:
    spec = spec_for("/Users/ann/mlx router")
    data = plistlib.loads(launchd.render_plist(spec, HOME).encode())
    assert data["Label"] == "com.mlx-router.server"
    assert data["ProgramArguments"] == [
        "/Users/ann/mlx router/.venv/bin/python",
        "-m",
        "mlx_router",
        "--config",
        "/Users/ann/mlx router/config.json",
    ]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    assert data["ThrottleInterval"] == 10
    assert data["StandardErrorPath"] == "/Users/ann/Library/Logs/mlx-router/mlx-router.err.log"
    assert data["StandardOutPath"] == "/Users/ann/Library/Logs/mlx-router/mlx-router.out.log"
    assert data["EnvironmentVariables"]["HF_HUB_OFFLINE"] == "1"
    assert data["EnvironmentVariables"]["PATH"].startswith("/Users/ann/mlx router/.venv/bin:")
    assert data["WorkingDirectory"] == "/Users/ann/mlx router"


def test_plist_escapes_xml_in_paths() -> None:
    folder = "/Users/ann/R&D <models>"
    text = launchd.render_plist(spec_for(folder), HOME)
    assert "<string>/Users/ann/R&amp;D &lt;models&gt;/config.json</string>" in text
    assert "R&D" not in text
    assert plistlib.loads(text.encode())["ProgramArguments"][-1] == f"{folder}/config.json"


def test_launchd_plans_command_lines() -> None:
    spec = spec_for("/Users/ann/m")
    plist = HOME / "Library/LaunchAgents/com.mlx-router.server.plist"
    install = launchd.install_plan(spec, HOME, 501)
    assert [a for a in install if isinstance(a, Command)] == [
        Command(("launchctl", "bootout", "gui/501/com.mlx-router.server"), check=False),
        Command(("launchctl", "enable", "gui/501/com.mlx-router.server")),
        Command(("launchctl", "bootstrap", "gui/501", str(plist))),
    ]
    writes = [a for a in install if isinstance(a, WriteFile)]
    assert [w.path for w in writes] == [plist]
    # the plist is written before it is bootstrapped, and the log folder exists before launchd opens the logs
    assert install.index(writes[0]) < len(install) - 1
    assert MakeDir(HOME / "Library/Logs/mlx-router") in install
    assert launchd.uninstall_plan(HOME, 501) == [
        Command(("launchctl", "bootout", "gui/501/com.mlx-router.server"), check=False),
        RemoveFile(plist),
    ]
    assert launchd.status_command(501).argv == ("launchctl", "print", "gui/501/com.mlx-router.server")


# -- systemd ------------------------------------------------------------------------------------------------

GOLDEN_UNIT = """\
# Written by `mlx-router service install`; `mlx-router service uninstall` removes it.
[Unit]
Description=mlx-router: OpenAI-compatible server for MLX models

[Service]
Type=simple
ExecStart=/home/ann/m/.venv/bin/python -m mlx_router --config /home/ann/m/config.json
WorkingDirectory=/home/ann/m
Environment="PATH=/home/ann/m/.venv/bin:/usr/local/bin:/usr/bin:/bin"
Environment="HF_HUB_OFFLINE=1"
Environment="PYTHONUNBUFFERED=1"
Environment="PYTHONPATH=/home/ann/m"
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
TimeoutStopSec=40
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=default.target
"""


def test_unit_golden() -> None:
    assert systemd.render_unit(spec_for("/home/ann/m", platform="systemd")) == GOLDEN_UNIT


def test_unit_quotes_paths_with_spaces_specifiers_and_dollars() -> None:
    folder = "/home/ann/my models 100% $HOME"
    unit = systemd.render_unit(spec_for(folder, platform="systemd"))
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert lines["ExecStart"] == (
        '"/home/ann/my models 100%% $HOME/.venv/bin/python" -m mlx_router '  # no $ expansion in the program
        '--config "/home/ann/my models 100%% $$HOME/config.json"'
    )
    assert lines["WorkingDirectory"] == "/home/ann/my models 100%% $HOME"
    assert 'Environment="PYTHONPATH=/home/ann/my models 100%% $HOME"' in unit.splitlines()


def test_unit_exec_arguments_round_trip_through_quotes() -> None:
    tricky = '/srv/a "quoted" \\ back;slash/config.json'
    quoted = systemd.quote_exec_arg(tricky)
    assert shlex.split(quoted) == [tricky]  # C-style escapes inside "...", as a POSIX shell reads them
    assert systemd.quote_exec_arg("--config") == "--config"


def test_unit_refuses_an_executable_systemd_would_reject() -> None:
    spec = build_spec("/srv/ok/config.json", "/srv/it's/bin/python", "systemd", {}, "/srv/ok", [])
    with pytest.raises(ServiceError, match="quotes or backslashes"):
        systemd.render_unit(spec)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    folder = tmp_path / "my models %h 100%"  # %h would expand to a home folder if left undoubled
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(sys.executable)
    (folder / "config.json").write_text("{}")
    python = str(folder / "bin" / "python")
    spec = build_spec(str(folder / "config.json"), python, "systemd", {}, str(folder), [])
    unit = tmp_path / "mlx-router.service"
    unit.write_text(systemd.render_unit(spec))
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Failed to initialize manager" in done.stderr:
        pytest.skip("systemd-analyze cannot run a user manager here")
    assert done.returncode == 0, done.stderr


def test_systemd_plans_command_lines() -> None:
    unit = Path("/home/ann/.config/systemd/user/mlx-router.service")
    install = systemd.install_plan(spec_for("/home/ann/m", platform="systemd"), Path("/home/ann"))
    assert [a.argv for a in install if isinstance(a, Command)] == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "mlx-router.service"),
        ("systemctl", "--user", "restart", "mlx-router.service"),
    ]
    assert isinstance(install[1], WriteFile) and install[1].path == unit
    uninstall = systemd.uninstall_plan(Path("/home/ann"))
    disable = ("systemctl", "--user", "disable", "--now", "mlx-router.service")
    assert uninstall[0] == Command(disable, check=False)
    assert RemoveFile(unit) in uninstall
    assert Command(("systemctl", "--user", "daemon-reload")) in uninstall


# -- executing plans ----------------------------------------------------------------------------------------


def test_execute_writes_files_runs_commands_and_stops_at_a_checked_failure(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "a" / "b" / "unit"
    after = tmp_path / "after"
    status = execute(
        [
            MakeDir(target.parent),
            WriteFile(target, "hello\n"),
            Command((sys.executable, "-c", "raise SystemExit(4)"), check=False),  # reported, plan goes on
            Command((sys.executable, "-c", "raise SystemExit(3)")),
            WriteFile(after, "never"),
        ],
        out,
    )
    assert status == 3
    assert target.read_text() == "hello\n"
    assert not after.exists()
    assert "failed with exit status 3" in out.getvalue()
    assert execute([RemoveFile(target), RemoveFile(target)], io.StringIO()) == 0  # missing file is fine
    assert not target.exists()


def test_execute_reports_a_missing_service_manager(tmp_path: Path) -> None:
    out = io.StringIO()
    assert execute([Command(("no-such-command-mlx-router-test",))], out) == 127
    assert "command not found" in out.getvalue()


def test_dry_run_prints_and_changes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "x" / "unit"
    status = execute([MakeDir(target.parent), WriteFile(target, "[Unit]\n"), Command(("false",))], out, dry_run=True)
    assert status == 0
    assert not target.parent.exists()
    assert "    | [Unit]" in out.getvalue() and "$ false" in out.getvalue()


# -- the CLI hook -------------------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str = '{"server": {"port": 8811}}') -> Path:
    folder = tmp_path / "conf dir"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    return folder / "config.json"


def test_service_install_dry_run_through_the_main_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    config = _config(tmp_path)
    monkeypatch.chdir(config.parent)
    assert router_cli.main(["service", "install", "--platform", "systemd", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f'--config "{config}"' in out  # ./config.json made absolute, quoted for its space
    assert "$ systemctl --user enable mlx-router.service" in out
    assert not home.exists()  # a dry run writes nothing


def test_service_install_refuses_a_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = _config(tmp_path, '{"server": {"port": "many"}}')
    assert router_cli.main(["service", "install", "--config", str(config), "--platform", "launchd"]) == 2
    assert "server.port" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_without_a_sub_command_the_cli_still_serves(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        router_cli.main(["--version"])  # reaches the serve parser, as before the hook
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        router_cli.main(["service", "--help"])
    assert exit_info.value.code == 0
    assert "install,uninstall,status" in capsys.readouterr().out


def test_service_status_dry_run_shows_file_url_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = _config(tmp_path)
    assert router_cli.main(["service", "status", "--platform", "launchd", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("com.mlx-router.server.plist (not installed)")
    assert out[1] == "health:       http://127.0.0.1:8811/v1/health"
    assert out[2] == f"$ launchctl print gui/{os.getuid()}/com.mlx-router.server"


# -- the launchd shell wrappers -----------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["install-launchd.sh", "uninstall-launchd.sh"])
@pytest.mark.parametrize("shell", ["bash", "dash", "sh"])
def test_wrapper_syntax(script: str, shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    assert subprocess.run([shell, "-n", str(REPO / script)], capture_output=True).returncode == 0


@pytest.mark.skipif(not (REPO / ".venv/bin/python").exists(), reason="the wrapper uses the checkout's .venv")
def test_install_wrapper_dry_run(tmp_path: Path) -> None:
    """On a pretend Mac (a `uname` that says Darwin), the wrapper installs the given config via launchd."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "uname").write_text("#!/bin/sh\necho Darwin\n")
    (fake_bin / "uname").chmod(0o755)
    config = _config(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", str(REPO / "install-launchd.sh"), "config.json", "--dry-run"],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"<string>{config}</string>" in done.stdout
    assert "$ launchctl bootstrap gui/" in done.stdout
    assert "dry run: nothing was changed" in done.stdout
    assert not (tmp_path / "home").exists()
