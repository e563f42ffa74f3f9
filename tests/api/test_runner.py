"""The batch runner on a real tiny model, without HTTP: solo path, moving into the batch, cancellation."""

from __future__ import annotations

import pytest
from mlx_lm import load

from mlx_router.core.runner import ModelRunner, RunnerConfig
from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent


@pytest.fixture(scope="module")
def model(random_llm_dir):
    return load(str(random_llm_dir))


def request(rid, prompt, n=40, **sampling):
    return GenerationRequest(rid, "m", prompt, n, SamplingParams(**sampling), ignore_eos=True)


def drive(runner, events, until):
    for _ in range(10000):
        if until():
            return
        runner.step()
    raise AssertionError("runner did not finish")


def tokens_of(events):
    return [t for e in events for t in e.tokens]


def run_alone(model, req, solo=True):
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0, solo_path=solo))
    events: list[TokenEvent] = []
    runner.add(req, events.append)
    drive(runner, events, lambda: events and events[-1].finish_reason)
    return tokens_of(events)


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"temperature": 0.9, "seed": 11},
        {"temperature": 0.7, "top_p": 0.8, "seed": 3, "presence_penalty": 1.0},
    ],
)
def test_joining_the_batch_keeps_the_output_exact(model, sampling):
    m, tok = model
    prompt_a = tok.encode("a request that starts alone")
    prompt_b = tok.encode("another request that arrives later and makes a batch")
    alone_a = run_alone(model, request("a", prompt_a, **sampling))
    assert alone_a == run_alone(model, request("a", prompt_a, **sampling), solo=False)
    alone_b = run_alone(model, request("b", prompt_b, **sampling))
    for join_after in (0, 1, 7):
        runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0))
        a_events: list[TokenEvent] = []
        b_events: list[TokenEvent] = []
        runner.add(request("a", prompt_a, **sampling), a_events.append)
        drive(runner, a_events, lambda: len(tokens_of(a_events)) >= join_after)
        runner.add(request("b", prompt_b, **sampling), b_events.append)
        drive(
            runner,
            a_events,
            lambda: a_events and a_events[-1].finish_reason and b_events and b_events[-1].finish_reason,
        )
        assert tokens_of(a_events) == alone_a, join_after
        assert tokens_of(b_events) == alone_b, join_after


def test_cancel_frees_the_slot_at_once(model):
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(max_running=1, prefix_cache_bytes=0))
    events = {k: [] for k in "abc"}
    for k in "abc":
        runner.add(request(k, tok.encode(f"request {k}"), n=1000), events[k].append)
    for _ in range(5):
        runner.step()
    runner.cancel("b")  # queued: dropped before it starts
    runner.cancel("a")  # running: its slot is free for c at the next step
    assert events["b"][-1].finish_reason == "cancelled" and not tokens_of(events["b"])
    assert events["a"][-1].finish_reason == "cancelled"
    before = len(tokens_of(events["c"]))
    for _ in range(3):
        runner.step()
    assert len(tokens_of(events["c"])) > before
    assert runner.counts() == (1, 0)


@pytest.mark.parametrize("step_size, batch_tokens", [(512, 4096), (16, 32)])
def test_prompts_prefilled_together_get_their_solo_output(model, step_size, batch_tokens):
    """Requests that arrive together are prefilled as one batch (right-padded to the longest, in chunks of
    `step_size` tokens, `batch_tokens` at a time); each still gets exactly its greedy output alone."""
    m, tok = model
    prompts = [tok.encode(" ".join(["word"] * n) + f" request {n}") for n in (3, 17, 40, 9, 64)]
    alone = [run_alone(model, request(f"r{i}", p, n=24)) for i, p in enumerate(prompts)]
    config = RunnerConfig(prefix_cache_bytes=0, prefill_step_size=step_size, prefill_batch_tokens=batch_tokens)
    runner = ModelRunner("m", m, tok, config)
    events: list[list[TokenEvent]] = [[] for _ in prompts]
    for i, p in enumerate(prompts):
        runner.add(request(f"r{i}", p, n=24), events[i].append)
    drive(runner, events, lambda: all(e and e[-1].finish_reason for e in events))
    assert [tokens_of(e) for e in events] == alone
    assert runner.stats.prefill_prompts == len(prompts)  # every prompt went through the batched prefill
    assert runner.stats.prefill_tokens == sum(len(p) - 1 for p in prompts)


def test_a_prefix_hit_and_fresh_prompts_prefill_together(model):
    m, tok = model
    shared = tok.encode("a long shared system prompt " * 6)
    first, second = shared + tok.encode("question one"), shared + tok.encode("question two, longer than one")
    fresh = tok.encode("something else entirely")
    alone = [run_alone(model, request("x", p, n=16)) for p in (second, fresh)]
    runner = ModelRunner("m", m, tok, RunnerConfig())
    done: list[TokenEvent] = []
    runner.add(request("first", first, n=16), done.append)
    drive(runner, done, lambda: done and done[-1].finish_reason)  # its cache is stored for the prefix
    events: list[list[TokenEvent]] = [[], []]
    runner.add(request("second", second, n=16), events[0].append)
    runner.add(request("fresh", fresh, n=16), events[1].append)
    drive(runner, events, lambda: all(e and e[-1].finish_reason for e in events))
    assert events[0][0].cached_tokens >= len(shared) - 1
    assert [tokens_of(e) for e in events] == alone


def test_a_solo_prompt_half_prefilled_continues_in_the_batch(model):
    """A long prompt prefilled alone, in chunks, hands its partial cache to the batch when another arrives."""
    m, tok = model
    long_prompt = tok.encode(" ".join(f"word{i}" for i in range(60)))
    other = tok.encode("a short one")
    alone = [run_alone(model, request("x", p, n=20)) for p in (long_prompt, other)]
    runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0, prefill_step_size=16))
    events: list[list[TokenEvent]] = [[], []]
    runner.add(request("long", long_prompt, n=20), events[0].append)
    runner.step()
    runner.step()  # two chunks of 16 tokens are in its cache, no token yet
    assert not events[0]
    runner.add(request("other", other, n=20), events[1].append)
    drive(runner, events, lambda: all(e and e[-1].finish_reason for e in events))
    assert [tokens_of(e) for e in events] == alone


def test_newcomers_to_a_decoding_batch_are_gathered_for_the_gather_window(model):
    import time

    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0, solo_path=False, prefill_gather_ms=300))
    first: list[TokenEvent] = []
    runner.add(request("a", tok.encode("the first request"), n=400), first.append)
    drive(runner, first, lambda: bool(first))  # the batch decodes; nothing to wait for when it was idle
    late = {rid: [] for rid in ("b", "c")}
    t0 = time.perf_counter()
    decoded_before = len(tokens_of(first))
    runner.add(request("b", tok.encode("a newcomer"), n=8), late["b"].append)
    for _ in range(3):
        runner.step()
    runner.add(request("c", tok.encode("another newcomer of the same burst"), n=8), late["c"].append)
    while not (late["b"] and late["c"]):
        runner.step()
        if time.perf_counter() - t0 < 0.25:
            assert not late["b"] and not late["c"], "a newcomer started inside the gather window"
    assert len(tokens_of(first)) > decoded_before + 5  # the batch kept decoding while the newcomers waited
    drive(runner, [], lambda: all(e and e[-1].finish_reason for e in late.values()))
    for rid, prompt in (("b", "a newcomer"), ("c", "another newcomer of the same burst")):
        assert tokens_of(late[rid]) == run_alone(model, request(rid, tok.encode(prompt), n=8))  # still exact
    runner.cancel("a")


def test_a_full_prefill_group_does_not_wait_for_the_gather_window(model):
    m, tok = model
    cfg = RunnerConfig(prefix_cache_bytes=0, solo_path=False, prefill_gather_ms=60_000, prefill_batch_tokens=16)
    runner = ModelRunner("m", m, tok, cfg)
    first: list[TokenEvent] = []
    runner.add(request("a", tok.encode("the first request"), n=400), first.append)
    drive(runner, first, lambda: bool(first))
    late: list[TokenEvent] = []
    runner.add(request("b", tok.encode("a newcomer with a prompt longer than sixteen tokens " * 2), n=4), late.append)
    drive(runner, late, lambda: late and late[-1].finish_reason)  # would take a minute if it waited
    runner.cancel("a")


def _record_prefills(runner):
    steps: list[int] = []
    recorded = runner.stats.prefilled

    def record(prompts: int, tokens: int, seconds: float) -> None:
        steps.append(tokens)
        recorded(prompts, tokens, seconds)

    runner.stats.prefilled = record  # type: ignore[method-assign]
    return steps


def test_newcomers_wait_one_step_rather_than_split_a_prefill_group(model):
    """Prompts that arrive while the last group moves into decoding are prefilled as one group, not as
    halves beside it, and still get their solo output."""
    m, tok = model
    cfg = RunnerConfig(prefix_cache_bytes=0, solo_path=False, prefill_step_size=64, prefill_batch_tokens=256)
    runner = ModelRunner("m", m, tok, cfg)  # groups of 4 prompts
    prefill_steps = _record_prefills(runner)
    first: list[TokenEvent] = []
    runner.add(request("a", tok.encode("the first request"), n=400), first.append)
    drive(runner, first, lambda: bool(first))
    prompts = {f"c{i}": tok.encode(f"newcomer number {i} with a prompt of its own") for i in range(6)}
    events = {rid: [] for rid in prompts}
    for rid in ("c0", "c1"):
        runner.add(request(rid, prompts[rid], n=8), events[rid].append)
    prefill_steps.clear()
    runner.step()  # c0 and c1 prefilled: they move into decoding at the next step
    for rid in ("c2", "c3", "c4", "c5"):
        runner.add(request(rid, prompts[rid], n=8), events[rid].append)
    drive(runner, [], lambda: all(e and e[-1].finish_reason for e in events.values()))
    group = sum(len(prompts[r]) - 1 for r in ("c2", "c3", "c4", "c5"))  # the last token is decoded, not prefilled
    assert group in prefill_steps, prefill_steps  # the four newcomers in one prefill
    for rid, prompt in prompts.items():
        assert tokens_of(events[rid]) == run_alone(model, request(rid, prompt, n=8)), rid
    runner.cancel("a")


def test_an_idle_model_holds_its_first_request_for_the_rest_of_its_burst(model):
    """Requests some milliseconds apart on an idle model start as one prefill group (not the first alone and
    the rest after it): each arrival extends the hold, which ends once none came for `idle_gather_ms` (or at
    holds.BURST_HOLD_LIMIT times that); all still get their solo output."""
    import time

    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0, idle_gather_ms=200, idle_gather_min_tokens=0))
    prefills = _record_prefills(runner)
    prompts = {rid: tok.encode(f"request {rid} of a burst, some words") for rid in "abcdef"}
    events = {rid: [] for rid in prompts}
    t0 = time.perf_counter()
    for i, rid in enumerate(prompts):
        while time.perf_counter() - t0 < 0.15 * i:  # one every 150 ms: each inside the last one's gap
            runner.step()
            assert not prefills and not any(events.values()), f"started before {rid} arrived"
        runner.add(request(rid, prompts[rid], n=8), events[rid].append)
    # the sixth came 750 ms after the first: the hold ends at 4 x 200 ms from the first, not 200 after the sixth
    assert 0 < runner.ready_in() < 0.2
    while runner.ready_in() > 0:
        time.sleep(runner.ready_in())
    assert 0.8 <= time.perf_counter() - t0 < 0.95
    drive(runner, [], lambda: all(e and e[-1].finish_reason for e in events.values()))
    assert prefills[0] == sum(len(p) - 1 for p in prompts.values()), prefills  # one group of all six
    for rid, prompt in prompts.items():
        assert tokens_of(events[rid]) == run_alone(model, request(rid, prompt, n=8)), rid
    lone: list[TokenEvent] = []
    t0 = time.perf_counter()
    runner.add(request("g", prompts["a"], n=2), lone.append)
    while runner.ready_in() > 0:
        runner.step()
        assert not lone
    assert time.perf_counter() - t0 >= 0.2  # alone, it waited one gap
    drive(runner, lone, lambda: lone and lone[-1].finish_reason)


def test_an_idle_model_does_not_hold_a_request_with_little_left_to_prefill(model):
    """A long prompt waits its gap; the next turn of that chat (a prefix-cache hit, a few tokens left) and a
    short question start at once, with their solo output."""
    import time

    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(idle_gather_ms=300, idle_gather_min_tokens=64))
    first = tok.encode("a long first turn of a chat, " * 12)
    assert len(first) >= 64
    turn1: list[TokenEvent] = []
    runner.add(request("t1", first, n=4), turn1.append)
    assert runner.ready_in() > 0.2  # held for the rest of a burst
    time.sleep(runner.ready_in())
    drive(runner, turn1, lambda: turn1 and turn1[-1].finish_reason)  # then stored in the prefix cache
    second = first + tokens_of(turn1) + tok.encode(" and then?")
    turn2: list[TokenEvent] = []
    runner.add(request("t2", second, n=4), turn2.append)
    assert runner.ready_in() == 0  # all but a few tokens cached: it starts now
    drive(runner, turn2, lambda: turn2 and turn2[-1].finish_reason)
    assert turn2[0].cached_tokens >= len(first)
    assert tokens_of(turn2) == run_alone(model, request("t2", second, n=4))
    short: list[TokenEvent] = []
    runner.add(request("q", tok.encode("hi"), n=2), short.append)
    assert runner.ready_in() == 0
    drive(runner, short, lambda: short and short[-1].finish_reason)


def test_a_full_prefill_group_or_a_busy_model_is_not_held(model):
    m, tok = model
    hold = {"idle_gather_ms": 60_000, "idle_gather_min_tokens": 0}
    cfg = RunnerConfig(prefix_cache_bytes=0, prefill_step_size=16, prefill_batch_tokens=32, **hold)
    runner = ModelRunner("m", m, tok, cfg)  # groups of 2 prompts
    events = {rid: [] for rid in "abc"}
    runner.add(request("a", tok.encode("one"), n=400), events["a"].append)
    assert runner.ready_in() > 59
    runner.add(request("b", tok.encode("two"), n=400), events["b"].append)
    assert runner.ready_in() == 0  # a whole group waits: it starts now
    drive(runner, [], lambda: events["a"] and events["b"])  # would take a minute if it waited
    runner.add(request("c", tok.encode("three"), n=4), events["c"].append)
    assert runner.ready_in() == 0  # the model is busy: a newcomer joins at the next step
    drive(runner, [], lambda: events["c"] and events["c"][-1].finish_reason)
    runner.cancel("a")
    runner.cancel("b")
    lone = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0, idle_gather_ms=60_000, prefill_batch_tokens=16))
    late: list[TokenEvent] = []
    lone.add(request("d", tok.encode("a prompt of more than sixteen tokens " * 3), n=4), late.append)
    drive(lone, late, lambda: late and late[-1].finish_reason)  # its prompt alone fills a group


def test_a_request_moved_into_the_batch_does_not_keep_its_own_cache(model):
    # the batch merges a copy of a request's cache; the solo sequence held its own until the request ended
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefix_cache_bytes=0))
    events = {k: [] for k in "ab"}
    runner.add(request("a", tok.encode("a long enough first request " * 20), n=50), events["a"].append)
    for _ in range(5):
        runner.step()
    runner.add(request("b", tok.encode("the second request"), n=50), events["b"].append)
    for _ in range(3):
        runner.step()
    moved = [a for a in runner._by_uid.values() if a.uid >= 0]
    assert moved and all(a.seq.cache_nbytes() == 0 for a in moved)
