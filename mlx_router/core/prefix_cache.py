"""Reusable prompt KV caches (multi-turn chats, shared system prompts), memory-bounded, least recently used out.

A thin layer over mlx-lm's `LRUPromptCache` (a token trie with LRU eviction by count and bytes) that adds what a
server needs: an exact hit still leaves one token to compute the first logits from, and a stored cache is
evaluated first, so it never pins the batch buffer it was sliced from.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache


def _compact(c: Any) -> None:
    """Copy a KV cache's keys and values down to the tokens it holds: its buffers grow in steps of 256
    tokens, and the slack would be stored (and counted) with every entry."""
    keys, values, offset = getattr(c, "keys", None), getattr(c, "values", None), getattr(c, "offset", None)
    if type(c).__name__ != "KVCache" or keys is None or values is None or not isinstance(offset, int):
        return
    if keys.shape[2] > offset:
        c.keys = mx.contiguous(keys[..., :offset, :])
        c.values = mx.contiguous(values[..., :offset, :])


class PrefixCache:
    """One model's prompt caches."""

    def __init__(self, model_id: str, max_bytes: int, max_entries: int = 64) -> None:
        self._model_id = model_id
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)

    @property
    def nbytes(self) -> int:
        return int(self._lru.nbytes)

    def fetch(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        """(a copy of the cache of the longest cached prefix, the prompt tokens it does not cover)."""
        if len(prompt) < 2:
            return None, prompt
        cache, rest = self._lru.fetch_nearest_cache(self._model_id, prompt)
        if cache is None:
            return None, prompt
        if not rest:
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def store(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        """Keep `cache`, which holds exactly `tokens`."""
        if not tokens or cache is None:
            return
        for c in cache:
            _compact(c)
        # A cache extracted from the batch is a lazy slice of the whole batch's KV buffer: evaluate it now,
        # or every stored entry keeps a full batch buffer alive (which ran an 80 GB GPU out of memory).
        mx.eval([c.state for c in cache])
        self._lru.insert_cache(self._model_id, list(tokens), cache)
