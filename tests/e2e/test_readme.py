"""README's examples run as printed: each block after `<!-- example -->` runs against a real server serving
the demo models (with no model installed, as on a fresh machine), and its output must equal the block after
`<!-- output -->`. The test command CI runs is the README's too (.ci/run reads it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import REPO, RouterServer

EXAMPLE = re.compile(r"<!-- example -->\n```(\w+)\n(.*?)```\n(?:<!-- output -->\n```text\n(.*?)```)?", re.S)


def examples() -> list[tuple[str, str, str | None]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in EXAMPLE.finditer((REPO / "README.md").read_text())]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    empty = tmp_path_factory.mktemp("no-models")
    cache = REPO / ".cache" / "mlx-router"  # the demo model is built once and reused by later runs
    config = {"defaults": {"model_directory": str(empty), "scan_hf_cache": False}}
    srv = RouterServer(tmp_path_factory.mktemp("readme"), config, demo=True, env={"MLX_ROUTER_CACHE": str(cache)})
    with srv.start(timeout=240):  # the first start builds the demo models
        yield srv


def test_readme_has_examples_and_a_test_command():
    assert len(examples()) >= 6
    text = (REPO / "README.md").read_text()
    assert "<!-- test-command -->" in text and "pytest" in text


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_runs_as_printed(demo_server: RouterServer, index: int, tmp_path: Path):
    lang, code, expected = examples()[index]
    code = code.replace("localhost:8800", f"127.0.0.1:{demo_server.port}")
    if lang == "bash":
        cmd = ["bash", "-c", "set -euo pipefail\n" + code]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    # as in the quick start's activated venv: `python3` is the one with the project's packages (Pillow, openai)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    if expected is not None:
        assert out.stdout.rstrip("\n") == expected.rstrip("\n")
