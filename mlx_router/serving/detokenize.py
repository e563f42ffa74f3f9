"""Generated tokens to text as they arrive, for any tokenizer.

Each new token is decoded together with the few tokens before it and only the difference is emitted, so what a
tokenizer does at token boundaries (SentencePiece's leading space, byte-level merges) comes out as the whole
output decoded at once would. Text that ends inside a multi-byte character (U+FFFD) waits for the next token.

One space at the very start of the output is dropped: the answer follows the template's own header, and a first
token that carries a word's leading space would otherwise indent it (mlx-lm's streaming detokenizers, which this
server used before, drop it too).
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """One request's decoder: `add_token`, then read `last_segment` (the text since the last read)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._tokens: list[int] = []
        self._prefix = 0  # where the decoded window starts: the tokens before the last emitted text
        self._read = 0  # tokens up to here are emitted
        self._segment = ""
        self._started = False

    def _decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _emit(self, text: str) -> None:
        if not self._started and text:
            self._started = True
            text = text[1:] if text[0] == " " else text
        self._segment += text

    def add_token(self, token: int) -> None:
        self._tokens.append(token)
        prefix_text = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(self._tokens[self._prefix :])
        if len(text) > len(prefix_text) and not text.endswith(_REPLACEMENT):
            self._emit(text[len(prefix_text) :])
            self._prefix, self._read = self._read, len(self._tokens)

    def finalize(self) -> None:
        """The output ended: emit what is left, even an incomplete character."""
        if self._read < len(self._tokens):
            prefix_text = self._decode(self._tokens[self._prefix : self._read])
            text = self._decode(self._tokens[self._prefix :])
            self._emit(text[len(prefix_text) :])
            self._prefix = self._read = len(self._tokens)

    @property
    def last_segment(self) -> str:
        segment, self._segment = self._segment, ""
        return segment
