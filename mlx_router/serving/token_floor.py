"""A lower bound on the tokens a text encodes to, from its bytes alone, measured once per tokenizer.

Tokenizing costs far more than reading the text: ~0.5 s of CPU and ~125 MB of memory per MB of text on the
2-core CPU host, so a 10 MB prompt took seconds and over a GB before the context check refused it. The bound
lets a prompt that cannot fit be refused before it is tokenized, and caps what one that passes can cost.

Every token of a byte-level BPE (Qwen, Llama 3, DeepSeek, gpt-oss) stands for a run of the text's UTF-8 bytes,
and so does every token of a SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma: its "▁" is a
space, "<0x0A>" one byte); the tokens of one text cover its bytes without overlap. Two bounds follow from the
vocabulary alone, and the larger one is taken:
- by weight: give each byte value b the weight 1/M(b), M(b) being the longest token (in bytes) that holds b; a
  token t then weighs at most len(t) * 1/len(t) = 1, so a text holds at least as many tokens as its bytes weigh;
- by boundaries: where two adjacent bytes of the text never stand next to each other inside any token (a
  letter then a space: tokens start words with their space), a token ends between them; a text holds at least
  one token more than it has such places. For prose this is close to the true count (a word or so a token).
Both are linear passes over the text's bytes in numpy: tens of milliseconds for 10 MB.

It holds only where the tokenizer maps the text to bytes one for one: normalizers that compose or strip
characters change the bytes first. Unicode normalization (Qwen's NFC) is applied to the text before weighing
when the text is not already in that form; any other normalizer, a pre-tokenizer that drops characters
(whitespace splitting), or a model with an unknown token that may swallow characters gives no bound (None),
and such prompts are tokenized whole as before.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)

_UNICODE_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation", "UnicodeScripts"}
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character standing for each byte value in a byte-level vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = dict(zip(printable, printable, strict=True)), 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


class TokenFloor:
    """`tokens_at_least(text)`: a number of tokens `text` is sure to encode to (added tokens included)."""

    CHUNK_BYTES = 1 << 22  # a text is weighed 4 MB at a time, so its transient arrays stay small

    def __init__(self, longest: list[int], inside: set[tuple[int, int]], form: str | None) -> None:
        """`longest[b]`: the longest token (in bytes) holding byte value b (0: none does); `inside`: the byte
        pairs that stand next to each other inside some token; `form`: the Unicode normalization the
        tokenizer applies first, if any."""
        import numpy as np

        self.form = form
        self._weights = np.array([1.0 / m if m else 0.0 for m in longest])
        apart = np.ones(65536, dtype=bool)
        for a, b in inside:
            apart[a << 8 | b] = False
        self._apart = apart

    @classmethod
    def measure(cls, tokenizer: Any) -> TokenFloor | None:
        """The floor of a tokenizer (a transformers tokenizer or a `tokenizers` one), or None where the
        conditions in the module's docstring do not hold."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "to_str"):
            return None
        try:
            spec = json.loads(backend.to_str())
        except (ValueError, TypeError):
            return None
        return cls.from_spec(spec)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> TokenFloor | None:
        """The floor of a tokenizer given as its `tokenizer.json` content."""
        form = _unicode_form(spec.get("normalizer"))
        if form is None or not _keeps_characters(spec.get("pre_tokenizer")):
            return None
        model = spec.get("model") or {}
        byte_level = any(p.get("type") == "ByteLevel" for p in _parts(spec.get("pre_tokenizer")))
        if model.get("type") not in ("BPE", "Unigram") or not (byte_level or model.get("byte_fallback")):
            return None
        vocab = model.get("vocab")
        pieces = vocab.keys() if isinstance(vocab, dict) else [entry[0] for entry in vocab or []]
        decoder = _byte_decoder() if byte_level else None
        runs = [run for piece in pieces for run in _piece_bytes(piece, decoder)]
        runs += [str(added.get("content", "")).encode("utf-8") for added in spec.get("added_tokens") or []]
        longest = [0] * 256
        inside: set[tuple[int, int]] = set()
        for run in runs:
            for b in set(run):
                longest[b] = max(longest[b], len(run))
            inside.update(zip(run, run[1:], strict=False))
        return cls(longest, inside, form or None)

    def tokens_at_least(self, text: str) -> int:
        """At least how many tokens `text` encodes to."""
        import numpy as np

        if self.form and not unicodedata.is_normalized(self.form, text):  # type: ignore[arg-type]
            text = unicodedata.normalize(self.form, text)  # type: ignore[arg-type]
        data = text.encode("utf-8", "surrogatepass")
        weight, boundaries = 0.0, 0
        for start in range(0, len(data), self.CHUNK_BYTES):
            # each chunk also holds the first byte of the next, for the pair that spans them
            chunk = np.frombuffer(data, np.uint8, min(self.CHUNK_BYTES + 1, len(data) - start), start)
            own = chunk[: self.CHUNK_BYTES]
            weight += float(np.bincount(own, minlength=256) @ self._weights)
            pairs = (chunk[:-1].astype(np.uint16) << 8) | chunk[1:]
            boundaries += int(np.count_nonzero(self._apart[pairs]))
        by_weight = int(weight * (1 - 1e-9))  # the float sum's rounding never lifts it over the true count
        return max(by_weight, boundaries + 1 if data else 0)

    def may_exceed(self, text: str, limit: int) -> bool:
        """False when `text` is certainly under `limit` tokens of floor, known without reading it: neither bound
        passes the text's bytes, a character is at most 4 bytes, and Unicode normalization makes at most 18
        characters of one (NFKC's worst)."""
        growth = 18 if self.form else 1
        return len(text) * 4 * growth >= limit


def _piece_bytes(piece: str, decoder: dict[str, int] | None) -> list[bytes]:
    """The runs of text bytes a vocabulary entry may stand for."""
    if decoder is not None and all(c in decoder for c in piece):
        return [bytes(decoder[c] for c in piece)]
    # SentencePiece style: "<0x0A>" is one byte (its letters, should they ever be matched, count as well); "▁"
    # is a space of the text, or a "▁" the text holds itself.
    runs = [piece.encode("utf-8")]
    match = _BYTE_TOKEN.fullmatch(piece)
    if match:
        runs.append(bytes([int(match.group(1), 16)]))
    if "\u2581" in piece:
        runs.append(piece.replace("\u2581", " ").encode("utf-8"))
    return runs


def _parts(component: Any) -> Iterator[dict[str, Any]]:
    """A normalizer or pre-tokenizer and, for a Sequence, its members."""
    if not isinstance(component, dict):
        return
    members = component.get("normalizers") or component.get("pretokenizers")
    if component.get("type") == "Sequence" and isinstance(members, list):
        for member in members:
            yield from _parts(member)
    else:
        yield component


def _unicode_form(normalizer: Any) -> str | None:
    """The Unicode form a normalizer applies ("" for none), or None when it may change the bytes otherwise."""
    form = ""
    for part in _parts(normalizer):
        kind = part.get("type")
        if kind in _UNICODE_FORMS:
            if form and form != kind:
                return None
            form = kind
        elif kind == "Prepend" and part.get("prepend") == "\u2581":
            continue  # one more "▁" token at most: only more tokens
        elif kind == "Replace" and part.get("pattern") == {"String": " "} and part.get("content") == "\u2581":
            continue  # spaces spelled "▁", as the vocabulary spells them
        else:
            return None
    return form


def _keeps_characters(pre_tokenizer: Any) -> bool:
    for part in _parts(pre_tokenizer):
        if part.get("type") not in _KEEPING_PRE_TOKENIZERS or part.get("behavior") == "Removed":
            return False
    return True
