"""The burst holds as pure functions: gap after the last arrival, cap after the first, full groups go at once."""

from mlx_router.core.holds import BURST_HOLD_LIMIT, Newcomer, burst_hold, gathering


def test_the_idle_hold_runs_from_the_last_arrival_up_to_its_cap():
    one = [Newcomer(100, arrived=1.0)]
    assert abs(burst_hold(10, one, 8, 4096, now=1.004) - 0.006) < 1e-9
    two = [Newcomer(100, arrived=1.0), Newcomer(100, arrived=1.008)]
    assert abs(burst_hold(10, two, 8, 4096, now=1.009) - 0.009) < 1e-9  # 10 ms after the second
    late = [Newcomer(100, arrived=1.0 + 0.009 * i) for i in range(6)]  # each inside the last one's gap
    cap = 1.0 + BURST_HOLD_LIMIT * 0.010
    assert abs(burst_hold(10, late, 8, 4096, now=1.030) - (cap - 1.030)) < 1e-9  # the cap, not 10 ms after 1.045
    assert burst_hold(10, late, 8, 4096, now=cap) == 0.0


def test_the_idle_hold_ends_for_a_full_group_begun_work_or_when_off():
    waiting = [Newcomer(100, arrived=1.0) for _ in range(8)]
    assert burst_hold(10, waiting, 8, 4096, now=1.0) == 0.0  # eight prompts: a whole group
    assert burst_hold(10, [Newcomer(5000, arrived=1.0)], 8, 4096, now=1.0) == 0.0  # a group's tokens
    assert burst_hold(10, [Newcomer(100, arrived=1.0, fresh=False)], 8, 4096, now=1.0) == 0.0
    assert burst_hold(0, [Newcomer(100, arrived=1.0)], 8, 4096, now=1.0) == 0.0
    assert burst_hold(10, [], 8, 4096, now=1.0) == 0.0


def test_gathering_for_a_decoding_batch_counts_from_the_oldest():
    waiting = [Newcomer(10, arrived=1.0), Newcomer(10, arrived=1.015)]
    assert gathering(20, waiting, 4096, now=1.019)
    assert not gathering(20, waiting, 4096, now=1.021)
    assert not gathering(20, [Newcomer(5000, arrived=1.0)], 4096, now=1.0)
    assert not gathering(0, waiting, 4096, now=1.0)


def test_a_newcomer_with_little_left_to_prefill_is_not_held():
    cheap = [Newcomer(15, arrived=1.0)]  # a prefix-cache hit: 15 of its tokens left
    assert burst_hold(10, cheap, 8, 4096, now=1.0, min_tokens=64) == 0.0
    assert burst_hold(10, cheap, 8, 4096, now=1.0, min_tokens=0) > 0  # the same without the floor
    company = [Newcomer(40, arrived=1.0), Newcomer(40, arrived=1.002)]  # together enough to gather
    assert abs(burst_hold(10, company, 8, 4096, now=1.003, min_tokens=64) - 0.009) < 1e-9
