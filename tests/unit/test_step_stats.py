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
