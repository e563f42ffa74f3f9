"""The benchmarks' one entry point: `python bench/run.py SCENARIO [ARGS...]`.

    python bench/run.py                   # every scenario, one line each
    python bench/run.py cpu               # the 2-core CPU comparison of RESULTS.md's summary table
    python bench/run.py SCENARIO --help   # a scenario's own options (ARGS go to its script)
    python bench/run.py --dry-run cpu     # the commands a scenario would run, without running them

A scenario runs its script with this checkout on PYTHONPATH (nothing to install beyond the project). The presets
(`cpu`, `vision-cpu`) build their random-weight models into .cache/bench/ once and append their rows to
bench/results/<preset>-<date>.jsonl; ARGS after the preset's name are added to its benchmark's command (a repeated
option overrides the preset's). Results go into RESULTS.md (the summary table) and HISTORY.md (the run's story).
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = REPO / ".cache" / "bench"

Commands = list[list[str]]


@dataclass(frozen=True)
class Scenario:
    """A named benchmark: the script it runs (its docstring's first line describes it) and how it is called."""

    name: str
    script: str  # under bench/
    build: Callable[[list[str]], Commands] | None = None  # None: the script with ARGS as they are

    def commands(self, args: list[str]) -> Commands:
        if self.build is not None:
            return self.build(args)
        if self.script.endswith(".sh"):
            return [["bash", str(HERE / self.script), *args]]
        return [[sys.executable, str(HERE / self.script), *args]]

    def summary(self) -> str:
        path = HERE / self.script
        if path.suffix == ".py":
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        else:  # a shell script: its first comment after the shebang
            lines = [ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines()[1:] if ln.startswith("#")]
            doc = lines[0] if lines else ""
        return _first_sentence(doc)


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.split("\n\n")[0].split())
    head, dot, _ = paragraph.partition(". ")
    return head + dot.strip()


def _tokenizer() -> Commands:
    tok = CACHE / "tok"
    if (tok / "tokenizer.json").exists():
        return []
    return [[sys.executable, str(HERE / "make_tokenizer.py"), str(tok), "32000"]]


def _model(name: str, shape: str, *extra: str) -> tuple[Path, Commands]:
    out = CACHE / name
    if (out / "model.safetensors").exists():
        return out, []
    cmd = [sys.executable, str(HERE / "make_model.py"), str(out), shape, "--tokenizer", str(CACHE / "tok"), *extra]
    return out, [cmd]


def _results(preset: str) -> str:
    return str(HERE / "results" / f"{preset}-{time.strftime('%Y-%m-%d')}.jsonl")


def cpu_preset(args: list[str]) -> Commands:
    """The tiny float32 model (hidden 64, 2 layers, vocabulary 32,000): raw mlx-lm, mlx_lm.server and mlx-router at
    1, 8 and 64 streams of ~333-token prompts and 256 new tokens, and a 3,000-word chat's second turn."""
    model, build = _model("tiny-fp32", "tiny", "--bits", "16", "--dtype", "float32")
    bench = [sys.executable, str(HERE / "run_bench.py"), str(model), "--name", "tiny-fp32", "--batches", "1,8,64"]
    bench += ["--conc", "1,8,64", "--max-running", "64", "--prefix-words", "3000", "--out", _results("cpu-tiny")]
    return [*_tokenizer(), *build, bench + args]


def vision_cpu_preset(args: list[str]) -> Commands:
    """A random Qwen2.5-VL of 21.6 M parameters: mlx-router beside mlx_vlm.server and mlx-vlm in process (first
    token with 1 and 4 images, 8 concurrent image requests, a second turn about the same image)."""
    model, build = _model("qwen2_5_vl_cpu", "qwen2_5_vl_cpu", "--bits", "16", "--dtype", "float32")
    bench = [sys.executable, str(HERE / "vision_bench.py"), str(model), "--name", "qwen2_5_vl_cpu"]
    bench += ["--steps", "ttft,agg,turns", "--out", _results("cpu-vision")]
    return [*_tokenizer(), *build, bench + args]


def dist_cpu_preset(args: list[str]) -> Commands:
    """Two ranks on this machine's ring against one process, on the tiny float32 model: greedy answers equal, the
    per-decode-step time at 1 and 8 streams, and the cost of one round of the group's own traffic."""
    model, build = _model("tiny-fp32", "tiny", "--bits", "16", "--dtype", "float32")
    bench = [sys.executable, str(HERE / "dist_bench.py"), str(model), "--out", _results("cpu-dist")]
    return [*_tokenizer(), *build, bench + args]


SCENARIOS = (
    # presets: the figures of RESULTS.md's summary table, on this machine
    Scenario("cpu", "run_bench.py", cpu_preset),
    Scenario("vision-cpu", "vision_bench.py", vision_cpu_preset),
    Scenario("dist-cpu", "dist_bench.py", dist_cpu_preset),
    # benchmarks
    Scenario("compare", "run_bench.py"),
    Scenario("vision", "vision_bench.py"),
    Scenario("dist", "dist_bench.py"),
    Scenario("runner", "runner_bench.py"),
    Scenario("prefix", "prefix_steps.py"),
    Scenario("constrained", "constrained_cost.py"),
    Scenario("pdf", "pdf_render.py"),
    Scenario("reliability", "reliability.py"),
    Scenario("load", "load.py"),
    Scenario("raw", "gen_bench.py"),
    Scenario("raw-batch", "batch_bench.py"),
    Scenario("embeddings", "embed_bench.py"),
    # diagnostics (where a step's time goes; what compiles on first use)
    Scenario("ablation", "step_ablation.py"),
    Scenario("step-modes", "step_modes.py"),
    Scenario("first-use", "first_use.py"),
    Scenario("attention", "attention_paths.py"),
    Scenario("gpu", "gpu/stage.sh"),
    # builders and readers
    Scenario("make-model", "make_model.py"),
    Scenario("make-tokenizer", "make_tokenizer.py"),
    Scenario("trace", "trace.py"),
    Scenario("pyspy-summary", "pyspy_summary.py"),
    Scenario("vision-summary", "vision_summary.py"),
    Scenario("graph-pick", "graph_pick.py"),
)


def scenario(name: str) -> Scenario | None:
    return next((s for s in SCENARIOS if s.name == name), None)


def listing() -> str:
    width = max(len(s.name) for s in SCENARIOS)
    lines = ["usage: python bench/run.py [--dry-run] SCENARIO [ARGS...]", ""]
    for s in SCENARIOS:
        summary = _first_sentence(s.build.__doc__ or "") if s.build is not None else s.summary()
        lines.append(f"  {s.name:<{width}}  {summary} ({s.script})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("scenario", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    chosen = scenario(ns.scenario) if ns.scenario else None
    if chosen is None:
        print(listing(), file=sys.stderr if ns.scenario else sys.stdout)
        return 2 if ns.scenario else 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    for cmd in chosen.commands(ns.args):
        print("$", " ".join(cmd), flush=True)
        if not ns.dry_run:
            done = subprocess.run(cmd, cwd=REPO, env=env)
            if done.returncode != 0:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
