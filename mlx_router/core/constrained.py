"""Constrained decoding on MLX: an llguidance grammar applied to the logits as a token mask, on any backend.

`ConstraintCompiler` is built once per loaded model; `compiler.processor(grammar)` gives one
`GrammarProcessor` per request, which mlx-lm's `generate_step`/`BatchGenerator` (and our solo path) call once
per generated token as a logits processor: `processor(tokens, logits) -> logits`. The mask is computed on the
CPU by llguidance and added to the logits as a 0/-inf bias with plain MLX ops, so it works on CPU, CUDA and
Metal alike (llguidance's own `llguidance.mlx` helper needs a Metal kernel).

Generation must stop on the model's EOS tokens (pass them to `BatchGenerator(stop_tokens=...)`): once the
grammar is complete the mask allows only those, so the output ends with finish_reason "stop".
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

import llguidance
import mlx.core as mx
import numpy as np

from mlx_router.constraints.errors import InvalidGrammarError

logger = logging.getLogger(__name__)

_BIAS_OF_BYTE = np.where(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(bool),
    0.0,
    -np.inf,
).astype(np.float32)
"""Row b: the additive bias (0 allowed, -inf not) of the 8 tokens whose bits byte b holds, least significant
first as llguidance writes them. Read-only."""
_BIAS_OF_BYTE.setflags(write=False)


class GrammarProcessor:
    """The logits processor of one constrained generation (one request, one batch row).

    Called once per generated token with the sequence's token context (prompt + tokens generated so far; on
    the first call just the prompt) and that row's logits, shape (1, vocab). It feeds the newly sampled token
    to the grammar, then sets every logit the grammar forbids to -inf. Works with greedy and random sampling.
    Not for speculative decoding: rejected draft tokens would need a rollback this class does not do.
    """

    def __init__(
        self,
        matcher: llguidance.LLMatcher,
        tokenizer_vocab: int,
        eos_token_ids: Iterable[int],
        vocab_size: int | None = None,
    ) -> None:
        self._matcher = matcher
        self._eos = frozenset(eos_token_ids)
        self._words = np.zeros((tokenizer_vocab + 31) // 32, dtype=np.int32)
        self._bias = np.zeros(0, dtype=np.float32)
        self._context_len: int | None = None
        self._error: str | None = None
        if vocab_size is not None:
            self._resize(vocab_size)

    @property
    def is_accepting(self) -> bool:
        """Whether the text so far is a complete match of the grammar (EOS is allowed now)."""
        return bool(self._matcher.is_accepting())

    @property
    def is_stopped(self) -> bool:
        """Whether the grammar allows nothing but EOS any more (complete, or failed: see `error`)."""
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        """Why the grammar rejected a sampled token, if it did (the processor then allows only EOS)."""
        return self._error

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """Consume the token sampled last step (if any) and mask `logits` (1, vocab) to the allowed tokens."""
        self._advance(tokens)
        if logits.shape[-1] != self._bias.shape[0]:
            self._resize(logits.shape[-1])
        self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        # 1 bit per token -> a float bias per token, in place; ids past the tokenizer's end stay -inf.
        # An add, not mx.where: MLX's CPU `where` is ~4x slower than copying and adding a float32 bias.
        np.take(_BIAS_OF_BYTE, self._words.view(np.uint8), axis=0, out=self._bias_bytes)
        return logits + mx.array(self._bias)

    def _advance(self, tokens: mx.array) -> None:
        length = tokens.shape[0]
        if self._context_len is None:  # first call: the context is the prompt
            self._context_len = length
            return
        new = length - self._context_len
        if new <= 0:
            return
        # reading the sampled token waits for the previous step: the only sync constrained decoding adds
        sampled = cast(list[int], tokens[-new:].tolist())
        self._context_len = length
        if self._error is not None:
            return
        if self._matcher.is_stopped() and set(sampled) <= self._eos:
            return  # the EOS that ends the output; generators may still ask for one more (unused) mask
        if not self._matcher.consume_tokens(sampled):
            detail = self._matcher.get_error().strip().splitlines()
            self._error = detail[0] if detail else f"token(s) {sampled} rejected by the grammar"
            logger.warning("constrained generation stopped: %s", self._error)

    def _resize(self, vocab_size: int) -> None:
        covered = self._words.size * 32
        buffer = np.full(max(vocab_size, covered), -np.inf, dtype=np.float32)
        self._bias_bytes = buffer[:covered].reshape(self._words.size * 4, 8)
        self._bias = buffer[:vocab_size]


class ConstraintCompiler:
    """Compiles grammars against one model's tokenizer and hands out `GrammarProcessor`s.

    `tokenizer` is mlx-lm's `TokenizerWrapper` (or a fast Hugging Face tokenizer). Building llguidance's view
    of the vocabulary costs time that grows with the vocabulary (up to ~1 s), so it happens on first use (or
    `prepare()`) and is kept. `vocab_size` is the width of the model's logits when known (it may exceed the
    tokenizer's; extra ids are never allowed); otherwise it is read from the first logits. `eos_token_ids`
    defaults to all of the tokenizer's EOS ids: the tokens the grammar allows once it is complete.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int | None = None,
        eos_token_ids: Iterable[int] | None = None,
        cache_size: int = 32,
    ) -> None:
        self._hf = getattr(tokenizer, "_tokenizer", tokenizer)
        ids = eos_token_ids if eos_token_ids is not None else _eos_ids(tokenizer)
        self.eos_token_ids = sorted(set(ids))
        if not self.eos_token_ids:
            raise ValueError("constrained decoding needs at least one EOS token id")
        self.vocab_size = vocab_size
        self._cache_size = cache_size
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._ll_tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """llguidance's tokenizer for this model (built on first use)."""
        with self._lock:
            if self._ll_tokenizer is None:
                self._ll_tokenizer = _build_ll_tokenizer(self._hf, self.eos_token_ids)
            return self._ll_tokenizer

    def prepare(self) -> None:
        """Build the tokenizer now (e.g. right after loading the model) instead of on the first request."""
        _ = self.ll_tokenizer

    def processor(self, grammar: str) -> GrammarProcessor:
        """A fresh processor for one generation under `grammar`; `InvalidGrammarError` if it fails."""
        template = self._compile(grammar)
        return GrammarProcessor(template.deep_copy(), self.ll_tokenizer.vocab_size, self.eos_token_ids, self.vocab_size)

    def validate(self, grammar: str) -> None:
        """Raise `InvalidGrammarError` unless `grammar` compiles for this model (the result is cached)."""
        self._compile(grammar)

    def special_token_id(self, text: str) -> int | None:
        """The id of the special (added) token whose text is `text`, or None when there is no such token."""
        ids = self._hf.encode(text, add_special_tokens=False)
        if len(ids) == 1 and self.ll_tokenizer.is_special_token(ids[0]):
            return int(ids[0])
        return None

    def think_tags(self, open_tag: str, close_tag: str) -> tuple[str | int, str | int]:
        """Tags for `response_format_grammar(think=...)`: token ids where they are special tokens."""
        resolved = (self.special_token_id(open_tag), self.special_token_id(close_tag))
        return (
            open_tag if resolved[0] is None else resolved[0],
            close_tag if resolved[1] is None else resolved[1],
        )

    def _compile(self, grammar: str) -> llguidance.LLMatcher:
        with self._lock:
            cached = self._compiled.get(grammar)
            if cached is not None:
                self._compiled.move_to_end(grammar)
                return cached
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidGrammarError(f"invalid grammar: {matcher.get_error()}")
        with self._lock:
            self._compiled[grammar] = matcher
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return matcher


def _eos_ids(tokenizer: Any) -> list[int]:
    ids = getattr(tokenizer, "eos_token_ids", None)
    if ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        ids = [] if eos is None else [eos]
    return [int(i) for i in ids]


def _build_ll_tokenizer(hf_tokenizer: Any, eos_token_ids: list[int]) -> llguidance.LLTokenizer:
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("constrained decoding needs a fast (Rust-backed) Hugging Face tokenizer")
    # serialize a copy without padding/truncation: llguidance reads the vocabulary and merges from it
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    n_vocab = backend.get_vocab_size(with_added_tokens=True)
    eos = [i for i in eos_token_ids if i < n_vocab]
    if not eos:
        raise ValueError(f"no EOS token id ({eos_token_ids}) is inside the tokenizer's vocabulary ({n_vocab})")
    return llguidance.LLTokenizer(backend.to_str(), eos_token=eos)
