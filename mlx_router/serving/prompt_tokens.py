"""Chat prompt text to token ids, each long stretch of text encoded once per conversation, not once per turn.

A chat's every turn re-renders the whole conversation, and encoding it again costs milliseconds per thousand
tokens on the HTTP side (21 ms for a 5,350-token conversation on the H200 host, about a third of the second
turn's time to first token). A fast tokenizer splits its input at its added tokens (`<|im_start|>`,
`<|im_end|>`, ...) before anything else and encodes the stretches between them independently, so the ids of
a text are the ids of those stretches, concatenated; a stretch seen before (an earlier message) is looked up.

That holds only where each stretch is encoded alike wherever it stands, so this is used only when:
- the tokenizer is a `tokenizers` backend whose pre-tokenizer and normalizer treat no stretch specially by its
  position (no Metaspace with `prepend_scheme: first`, no Prepend normalizer, which mark only the first);
- every added token is matched as written (not normalized) and keeps the whitespace around it (no lstrip,
  rstrip or single_word);
- a probe text, built from the added tokens and awkward whitespace, encodes the same both ways.
Anything else encodes whole, as before.

A model's own reply comes back in the next turn as text, and encoding that text need not give the ids the model
generated (BPE has many spellings of one string; a model may pick one the encoder never would). The prefix
cache matches ids, so from the first differing id on the reply, and everything after it, would be prefilled
again. `remember_reply` therefore files the reply's stretch (the prompt's last stretch, e.g. `assistant\n`,
and the reply text, as the template writes them back) with the ids the model saw: the next turn's prompt then
starts with exactly the ids of the last turn's prompt and reply, and hits the cache to the end of the reply.
"""

from __future__ import annotations

import json
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from mlx_router.errors import InvalidRequestError
from mlx_router.serving.token_floor import TokenFloor

MEMO_MIN_CHARS = 256  # shorter stretches are encoded each time: a lookup would save next to nothing
MEMO_MAX_CHARS = 16_000_000  # text remembered per model: with its ids (4 bytes each), about 32 MB

_POSITIONAL = ('"prepend_scheme": "first"', '"type": "Prepend"')  # in `_state`'s spacing


class PromptEncoder:
    """One model's chat-prompt encoder (thread-safe: chats are prepared on worker threads)."""

    def __init__(self, tokenizer: Any, max_chars: int = MEMO_MAX_CHARS) -> None:
        self._tokenizer = tokenizer
        self._max_chars = max_chars
        self._memo: OrderedDict[str, array[int]] = OrderedDict()  # least recently used first
        self._chars = 0
        self._lock = threading.Lock()
        self._backend, self._added = _segmentable(tokenizer)
        self._added_ids = frozenset(self._added.values())
        self._split = _splitter(self._added) if self._backend is not None else None
        if self._split is not None and not self._agrees():
            self._backend = self._split = None
        self.floor = TokenFloor.measure(tokenizer)

    def refuse_oversized(self, text: str, context_tokens: int | None, param: str) -> None:
        """A 400 (context_length_exceeded) for a text sure to fill `context_tokens` by the tokenizer's floor
        (serving/token_floor.py), found in milliseconds where tokenizing it would take seconds and gigabytes."""
        if context_tokens is None or self.floor is None or not self.floor.may_exceed(text, context_tokens):
            return
        at_least = self.floor.tokens_at_least(text)
        if at_least >= context_tokens:
            raise InvalidRequestError(
                f"the prompt has at least {at_least} tokens and this model's context is {context_tokens}",
                param=param,
                code="context_length_exceeded",
            )

    @property
    def segmented(self) -> bool:
        """Whether stretches are encoded (and remembered) one by one."""
        return self._split is not None

    def encode(self, text: str) -> list[int]:
        """The ids `tokenizer.encode(text, add_special_tokens=False)` gives, except in a stretch filed by
        `remember_reply`, which gets the ids the model generated."""
        if self._split is None:
            return list(self._tokenizer.encode(text, add_special_tokens=False))
        pieces = [p for p in self._split.split(text) if p]
        known: dict[int, Sequence[int]] = {}
        missing: list[int] = []
        with self._lock:
            for i, piece in enumerate(pieces):
                token = self._added.get(piece)
                if token is not None:
                    known[i] = [token]
                elif piece in self._memo:
                    self._memo.move_to_end(piece)
                    known[i] = self._memo[piece]
                else:
                    missing.append(i)
        if missing:
            assert self._backend is not None
            encoded = self._backend.encode_batch([pieces[i] for i in missing], add_special_tokens=False)
            with self._lock:
                for i, enc in zip(missing, encoded, strict=True):
                    known[i] = list(enc.ids)
                    self._remember(pieces[i], known[i])
        return [t for i in range(len(pieces)) for t in known[i]]

    def remember_reply(self, prompt_text: str, reply_ids: Sequence[int], reply_text: str) -> bool:
        """File the stretch that `reply_text`, answered to `prompt_text`, forms in the next turn's prompt with
        the ids the model generated. False (nothing filed) when the reply holds an added token (the stretch
        would split there), is empty, or the tokenizer is encoded whole."""
        if self._split is None or not reply_ids or not reply_text:
            return False
        if any(int(t) in self._added_ids for t in reply_ids):
            return False
        pieces = self._split.split(prompt_text)
        tail = pieces[-1] if pieces and pieces[-1] not in self._added else ""
        key = tail + reply_text
        if self._split.search(key) is not None:  # the reply's text spells an added token: it would split there
            return False
        assert self._backend is not None
        tail_ids = list(self._backend.encode(tail, add_special_tokens=False).ids) if tail else []
        with self._lock:
            self._remember(key, tail_ids + [int(t) for t in reply_ids], reply=True)
        return True

    def _remember(self, piece: str, ids: Sequence[int], reply: bool = False) -> None:
        """Keep `piece`'s ids. An encoded stretch is kept from MEMO_MIN_CHARS on and never overwrites an entry
        (a filed reply keeps its generated ids); a reply is kept at any length and replaces an earlier filing."""
        if len(piece) > self._max_chars or (len(piece) < MEMO_MIN_CHARS and not reply):
            return
        if piece in self._memo:
            if not reply:
                return
            self._chars -= len(piece)
            del self._memo[piece]
        self._memo[piece] = array("i", ids)
        self._chars += len(piece)
        while self._chars > self._max_chars:
            old, _ = self._memo.popitem(last=False)
            self._chars -= len(old)

    def _agrees(self) -> bool:
        """Whether a probe encodes the same stretch by stretch as whole (a check of the conditions above)."""
        marks = sorted(self._added)[:8]
        parts = ["  leading spaces", "\n\nline\n", " trailing ", "naïve 数字 123 ", "\t"]
        probe = "".join(f"{p}{m}" for p, m in zip(parts * 2, marks * 2, strict=False)) + " end"
        whole = list(self._tokenizer.encode(probe, add_special_tokens=False))
        saved, self._max_chars = self._max_chars, 0  # nothing of the probe is remembered
        try:
            return self.encode(probe) == whole
        finally:
            self._max_chars = saved


def _segmentable(tokenizer: Any) -> tuple[Any | None, dict[str, int]]:
    """(the `tokenizers` backend, added token text -> id) when the conditions hold, else (None, {})."""
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a transformers fast tokenizer's `tokenizers` one
    if backend is None or not hasattr(backend, "get_added_tokens_decoder"):
        return None, {}
    for part in (backend.pre_tokenizer, backend.normalizer):
        if part is not None and any(mark in _state(part) for mark in _POSITIONAL):
            return None, {}
    added: dict[str, int] = {}
    for token_id, tok in backend.get_added_tokens_decoder().items():
        if tok.normalized or tok.lstrip or tok.rstrip or tok.single_word or not tok.content:
            return None, {}
        added[tok.content] = int(token_id)
    return backend, added


def _state(part: Any) -> str:
    """A pre-tokenizer's or normalizer's configuration as JSON text."""
    state = part.__getstate__()
    text = state.decode() if isinstance(state, bytes) else str(state)
    try:
        return json.dumps(json.loads(text))  # one spacing, whatever the library wrote
    except ValueError:
        return text


def _splitter(added: dict[str, int]) -> re.Pattern[str] | None:
    if not added:
        return None
    # Longest first: at one position the longest added token wins, as the tokenizer's own matching does.
    alternatives = "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))
    return re.compile(f"({alternatives})")
