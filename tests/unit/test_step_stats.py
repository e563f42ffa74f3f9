import logging

from mlx_router.core.step_stats import StepStats


def test_a_summary_of_the_period_then_a_fresh_start(caplog):
    stats = StepStats("m", period=0.0)
    stats.decoded(tokens=8, decode_s=0.02, deliver_s=0.001)
    stats.decoded(tokens=8, decode_s=0.04, deliver_s=0.001)
    stats.prefilled(prompts=2, tokens=540, seconds=0.05)
    with caplog.at_level(logging.INFO, logger="mlx_router.core.step_stats"):
        stats.maybe_log()
    line = caplog.records[-1].getMessage()
    assert "2 steps, 8.0 tok/step, decode 30.0 ms/step, deliver 1.00 ms/step" in line
    assert "prefill 2 prompts, 540 tokens in 50 ms" in line
    assert (stats.steps, stats.tokens, stats.prefill_prompts) == (0, 0, 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlx_router.core.step_stats"):
        stats.maybe_log()  # nothing happened: nothing logged
    assert not caplog.records


def test_the_debug_trace_is_what_bench_trace_reads(caplog, monkeypatch):
    """bench/trace.py parses these lines; a change to their wording must change it too."""
    import importlib.util
    import sys
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from mlx_router.core.step_stats import trace_added, trace_step

    path = Path(__file__).resolve().parents[2] / "bench" / "trace.py"
    spec = importlib.util.spec_from_file_location("bench_trace", path)
    reader = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_trace", reader)  # its dataclasses look themselves up there
    spec.loader.exec_module(reader)  # type: ignore[union-attr]
    req = SimpleNamespace(request_id="chatcmpl-x", received=time.monotonic() - 0.012, prompt_tokens=[1] * 278)
    work = SimpleNamespace(decode_time=0.0071, prompt_tokens=1944, prompt_time=0.125)
    with caplog.at_level("DEBUG", logger="mlx_router.core.step_stats"):
        trace_added(req, 0, "waits", 3, 1)
        trace_step(58, 0.181, work, 1, 7, time.perf_counter(), 0)
    added, step = caplog.messages
    m = reader.ADDED.search(added)
    assert m and m[1] == "chatcmpl-x" and 11 < float(m[2]) < 200
    m = reader.STEP.search(step)
    assert m and (m[1], m[2], m[4], m[6]) == ("181.0", "1", "1944", "7")
    caplog.clear()
    with caplog.at_level("INFO", logger="mlx_router.core.step_stats"):
        trace_step(1, 0.01, work, 1, 0, time.perf_counter(), 0)
    assert not caplog.messages  # nothing below debug
