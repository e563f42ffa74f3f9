"""bench/run.py is the benchmarks' one entry point: every scenario names a script that exists, every script in
bench/ is a scenario or used by one (or by bench/gpu), and presets build their commands as documented."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_every_scenario_names_a_script_and_says_what_it_does(run: ModuleType) -> None:
    names = [s.name for s in run.SCENARIOS]
    assert len(names) == len(set(names))
    listing = run.listing()
    for s in run.SCENARIOS:
        assert (BENCH / s.script).is_file(), s.script
        line = next(ln for ln in listing.splitlines() if ln.strip().startswith(s.name + " "))
        assert len(line.split(None, 1)[1]) > len(s.script) + 10, line  # a summary, not only the script's name


def test_every_bench_script_is_reachable(run: ModuleType) -> None:
    """No orphans: a script is a scenario's, or another script (or bench/gpu's shell scripts) uses it."""
    used = {s.script for s in run.SCENARIOS}
    for path in [*BENCH.glob("*.py"), *BENCH.glob("gpu/*.sh")]:
        text = path.read_text()
        used |= {f"{m}.py" for m in re.findall(r"^from (\w+) import", text, re.M)}
        used |= {m for m in re.findall(r"\b(\w+\.py)\b", text) if m != path.name}
    orphans = sorted(p.name for p in BENCH.glob("*.py") if p.name != "run.py" and p.name not in used)
    assert orphans == []


def test_the_cpu_preset_builds_its_model_then_runs_the_comparison(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--dry-run", "cpu", "--conc", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    commands = [line[2:] for line in out.stdout.splitlines() if line.startswith("$ ")]
    bench = commands[-1].split()
    assert bench[1].endswith("run_bench.py") and bench[-2:] == ["--conc", "1"]  # the user's option comes last: it wins
    assert "--prefix-words" in bench and "tiny-fp32" in bench[2]
    for earlier in commands[:-1]:
        assert "make_tokenizer.py" in earlier or "make_model.py" in earlier


def test_an_unknown_scenario_lists_the_known_ones() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "compare" in out.stderr and "usage: python bench/run.py" in out.stderr
