"""Tokens to text for one request: incremental detokenizing and stop strings.

A stop string ends the output before it and is never returned, also when it spans several tokens or several
stream chunks: text that could be the beginning of a stop string is held back until it is known not to be.
"""

from __future__ import annotations

from typing import Any

from mlx_router.serving.detokenize import IncrementalDetokenizer


class StopMatcher:
    """Finds the first stop string in a growing text, holding back possible partial matches."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        buf = self._held + text
        first = -1
        for s in self._stops:
            i = buf.find(s)
            if i != -1 and (first == -1 or i < first):
                first, self.matched = i, s
        if first != -1:
            self._held = ""
            return buf[:first], True
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The output ended without a stop string: release what was held back."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of some stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best


class TextAssembler:
    """Turns a request's generated tokens into text deltas, applying its stop strings."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self._detok = IncrementalDetokenizer(tokenizer)
        self._stops = StopMatcher(stops)

        self.stopped = False
        self.text = ""

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, if one did."""
        return self._stops.matched

    def add(self, tokens: list[int]) -> str:
        """Feed generated tokens; return the new text (empty while held back). Sets `stopped`."""
        if self.stopped:
            return ""
        for t in tokens:
            self._detok.add_token(t)
        out, self.stopped = self._stops.feed(self._detok.last_segment)
        self.text += out
        return out

    def finish(self) -> str:
        """The generation ended: flush the detokenizer and any held-back text."""
        if self.stopped:
            return ""
        self._detok.finalize()
        out, self.stopped = self._stops.feed(self._detok.last_segment)
        if not self.stopped:
            out += self._stops.flush()
        self.text += out
        return out
