"""Reusable prompt KV caches (multi-turn chats, shared system prompts), memory-bounded, least recently used out.

A token trie over the stored sequences finds the longest usable prefix of a new prompt by walking the prompt
once; nothing is copied unless the hit is worth it (`min_tokens`: every chat shares a few template tokens, and
copying a whole stored cache to skip five tokens of prefill costs more than it saves). A hit is either a stored
sequence the prompt starts with, or one that shares the prompt's first tokens and is trimmed back to them (for
caches that can be trimmed). mlx-lm's `LRUPromptCache` does the same job but searched the whole trie below the
shared template tokens on every request: 33 ms with 64 stored conversations on the 2-core test machine.

An exact hit still leaves one token to compute the first logits from, and a stored cache is evaluated first, so
it never pins the batch buffer it was sliced from.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache


def _compact(c: Any) -> None:
    """Copy a KV cache's keys and values down to the tokens it holds: its buffers grow in steps of 256
    tokens, and the slack would be stored (and counted) with every entry."""
    keys, values, offset = getattr(c, "keys", None), getattr(c, "values", None), getattr(c, "offset", None)
    if type(c).__name__ != "KVCache" or keys is None or values is None or not isinstance(offset, int):
        return
    if keys.shape[2] > offset:
        c.keys = mx.contiguous(keys[..., :offset, :])
        c.values = mx.contiguous(values[..., :offset, :])


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    end: tuple[int, ...] | None = None  # the stored sequence that ends here


@dataclass
class _Entry:
    cache: list[Any]
    nbytes: int
    trimmable: bool


class PrefixCache:
    """One model's prompt caches."""

    def __init__(
        self, model_id: str, max_bytes: int, max_entries: int = 64, min_tokens: int = 32, bytes_per_token: int = 0
    ) -> None:
        self._model_id = model_id
        # > 0: an entry counts its tokens times this, not its arrays' bytes (the ranks of a pipeline hold
        # different layers, and must all keep and drop the same entries)
        self._bytes_per_token = bytes_per_token
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._min_tokens = max(1, min_tokens)
        self._root = _Node()
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()  # least recently used first
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def fetch(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        """(a copy of the cache of the longest usable cached prefix, the prompt tokens it does not cover)."""
        key, keep = self._best_hit(prompt)
        if key is None or keep < self._min_tokens:
            return None, prompt
        entry = self._entries[key]
        self._entries.move_to_end(key)
        cache = copy.deepcopy(entry.cache)
        if keep < len(key):
            trim_prompt_cache(cache, len(key) - keep)
        return cache, prompt[keep:]

    def store(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        """Keep `cache`, which holds exactly `tokens`."""
        if not tokens or cache is None or len(tokens) < self._min_tokens:
            return
        for c in cache:
            _compact(c)
        # A cache extracted from the batch is a lazy slice of the whole batch's KV buffer: its copy is queued
        # now, or every stored entry keeps a full batch buffer alive (which ran an 80 GB GPU out of memory).
        # Queued, not waited for: waiting would also wait for the decode step already in flight (the slice
        # depends on the buffer that step writes), costing a whole step each time a request finishes.
        mx.async_eval([c.state for c in cache])
        key = tuple(tokens)
        trimmable = can_trim_prompt_cache(cache)
        if key in self._entries:
            self._remove(key)
        node = self._root
        redundant = []
        for tok in key:
            node = node.children.setdefault(tok, _Node())
            # A stored prefix of this sequence is redundant when this one can be trimmed back to it.
            if trimmable and node.end is not None and self._entries[node.end].trimmable:
                redundant.append(node.end)
        node.end = key
        nbytes = len(key) * self._bytes_per_token if self._bytes_per_token else int(sum(c.nbytes for c in cache))
        entry = _Entry(cache, nbytes, trimmable)
        self._entries[key] = entry
        self._nbytes += entry.nbytes
        for old in redundant:
            self._remove(old)
        while self._entries and (len(self._entries) > self._max_entries or self._nbytes > self._max_bytes):
            self._remove(next(iter(self._entries)))

    # -- the trie ----------------------------------------------------------------------------------------
    def _best_hit(self, prompt: list[int]) -> tuple[tuple[int, ...] | None, int]:
        """(the stored sequence to start from, how many of its tokens to keep); at most len(prompt) - 1 kept."""
        limit = len(prompt) - 1
        if limit < 1:
            return None, 0
        node, depth = self._root, 0
        best: tuple[tuple[int, ...] | None, int] = (None, 0)
        for tok in prompt:
            child = node.children.get(tok)
            if child is None:
                break
            node, depth = child, depth + 1
            if node.end is not None and (depth <= limit or self._entries[node.end].trimmable):
                best = (node.end, min(depth, limit))
        if depth > best[1]:
            # A stored sequence runs on past where the prompt leaves the trie: trim it back to the shared part.
            longer = self._any_below(node)
            if longer is not None and self._entries[longer].trimmable:
                best = (longer, min(depth, limit))
        return best

    @staticmethod
    def _any_below(node: _Node) -> tuple[int, ...] | None:
        while node.end is None:
            if not node.children:
                return None
            node = next(iter(node.children.values()))
        return node.end

    def _remove(self, key: tuple[int, ...]) -> None:
        entry = self._entries.pop(key)
        self._nbytes -= entry.nbytes
        path = [self._root]
        for tok in key:
            path.append(path[-1].children[tok])
        path[-1].end = None
        for depth in range(len(key), 0, -1):  # drop the nodes no other sequence needs
            node = path[depth]
            if node.children or node.end is not None:
                break
            del path[depth - 1].children[key[depth - 1]]
