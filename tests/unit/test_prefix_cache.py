"""The prefix cache's choice of hit, its minimum, trimming, and eviction, on real mlx-lm KV caches."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache, RotatingKVCache

from mlx_router.core.prefix_cache import PrefixCache

HEADS, DIM = 2, 4


def kv(tokens: list[int], rotating: bool = False) -> list:
    """A one-layer cache holding `tokens`, each position's keys filled with its token id (to check trims)."""
    c = RotatingKVCache(max_size=16) if rotating else KVCache()  # rotated past 16 tokens: no trimming
    keys = mx.broadcast_to(mx.array(tokens, dtype=mx.float32)[None, None, :, None], (1, HEADS, len(tokens), DIM))
    c.update_and_fetch(keys, keys)
    return [c]


def held(cache: list) -> list[int]:
    c = cache[0]
    return [int(x) for x in c.state[0][0, 0, : c.offset, 0].tolist()]


def seq(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def test_a_prompt_that_extends_a_stored_sequence_reuses_all_of_it():
    pc = PrefixCache("m", 1 << 30, min_tokens=4)
    turn1 = seq(1, 40)
    pc.store(turn1, kv(turn1))
    cache, rest = pc.fetch(turn1 + [500, 501])
    assert held(cache) == turn1
    assert rest == [500, 501]


def test_an_exact_hit_leaves_one_token_to_compute():
    pc = PrefixCache("m", 1 << 30, min_tokens=4)
    p = seq(1, 40)
    pc.store(p, kv(p))
    cache, rest = pc.fetch(p)
    assert held(cache) == p[:-1]
    assert rest == p[-1:]


def test_a_longer_stored_sequence_is_trimmed_back_to_the_shared_part():
    pc = PrefixCache("m", 1 << 30, min_tokens=4)
    stored = seq(1, 60)
    pc.store(stored, kv(stored))
    prompt = seq(1, 30) + [900, 901, 902]
    cache, rest = pc.fetch(prompt)
    assert held(cache) == seq(1, 30)
    assert rest == [900, 901, 902]
    # The stored entry itself is untouched (the hit was a copy).
    again, _ = pc.fetch(stored + [7])
    assert held(again) == stored


def test_short_shared_prefixes_are_not_worth_a_copy():
    """Every chat shares its template's first tokens: that is no reason to copy a stored cache."""
    pc = PrefixCache("m", 1 << 30, min_tokens=32)
    a = seq(1, 5) + seq(100, 300)
    pc.store(a, kv(a))
    prompt = seq(1, 5) + seq(5000, 280)
    assert pc.fetch(prompt) == (None, prompt)
    pc.store(seq(1, 10), kv(seq(1, 10)))  # too short to ever give a hit: not kept
    assert len(pc) == 1


def test_the_longest_hit_wins_and_a_stored_prefix_of_a_new_entry_is_dropped():
    pc = PrefixCache("m", 1 << 30, min_tokens=4)
    short, long_ = seq(1, 20), seq(1, 50)
    pc.store(short, kv(short))
    pc.store(long_, kv(long_))
    assert len(pc) == 1  # `short` is a prefix of `long_`, which can be trimmed back to it
    cache, rest = pc.fetch(seq(1, 35) + [999])
    assert held(cache) == seq(1, 35)
    assert rest == [999]


def test_caches_that_cannot_be_trimmed_are_only_reused_whole():
    pc = PrefixCache("m", 1 << 30, min_tokens=4)
    stored = seq(1, 40)
    pc.store(stored, kv(stored, rotating=True))
    cache, rest = pc.fetch(stored + [77])
    assert cache is not None and rest == [77]
    assert pc.fetch(seq(1, 30) + [5]) == (None, seq(1, 30) + [5])  # would need a trim
    assert pc.fetch(stored)[0] is None  # an exact hit needs a trim too


def test_least_recently_used_entries_go_first_by_count_and_by_bytes():
    pc = PrefixCache("m", 1 << 30, max_entries=2, min_tokens=4)
    a, b, c = seq(1, 10), seq(100, 10), seq(200, 10)
    pc.store(a, kv(a))
    pc.store(b, kv(b))
    assert pc.fetch(a + [1])[0] is not None  # a is now the most recently used
    pc.store(c, kv(c))
    assert len(pc) == 2
    assert pc.fetch(b + [1])[0] is None
    assert pc.fetch(a + [1])[0] is not None and pc.fetch(c + [1])[0] is not None

    probe = PrefixCache("m", 1 << 30, min_tokens=4)
    probe.store(a, kv(a))
    one = probe.nbytes  # stored caches are compacted to the tokens they hold
    small = PrefixCache("m", max_bytes=2 * one, min_tokens=4)
    for s in (a, b, c):
        small.store(s, kv(s))
    assert len(small) == 2 and small.nbytes <= 2 * one
    assert small.fetch(a + [1])[0] is None


def test_removing_an_entry_keeps_the_others_reachable():
    pc = PrefixCache("m", 1 << 30, max_entries=2, min_tokens=4)
    x, y = seq(1, 10) + [50, 51], seq(1, 10) + [60, 61]  # share 10 tokens, then branch
    pc.store(x, kv(x))
    pc.store(y, kv(y))
    pc.store(seq(300, 10), kv(seq(300, 10)))  # evicts x
    cache, rest = pc.fetch(y + [9])
    assert held(cache) == y and rest == [9]
    cache, rest = pc.fetch(seq(1, 10) + [70])  # only y remains below the shared part
    assert held(cache) == seq(1, 10) and rest == [70]
