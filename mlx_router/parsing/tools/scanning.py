"""Building blocks of the format scanners: what a scan returns, marker search, and JSON extents.

A scanner reads the text not yet committed and splits it into segments (content, reasoning, complete calls),
holding back only a tail that might still become markup. It never reads a character twice once committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

SegmentKind = Literal["content", "reasoning", "call"]


@dataclass
class Segment:
    """One piece of output. For a call, `text` is its raw markup (given back as content if it is invalid)."""

    kind: SegmentKind
    text: str
    name: str | None = None
    args: str | None = None
    """Call arguments as JSON text: complete in a finished call, a prefix of the final text if pending."""
    error: str | None = None
    """Why the markup is not a valid call, when the scanner already knows."""


@dataclass
class Scan:
    """What one scan found: finished segments for text[:commit], the state there, and an unfinished call."""

    segments: list[Segment] = field(default_factory=list)
    commit: int = 0
    state: Any = None
    pending: Segment | None = None
    """A call that starts at `commit` and is not finished yet (never set when the scan was final)."""


def content(text: str) -> Segment:
    """A content segment."""
    return Segment("content", text)


def call(raw: str, name: str | None, args: str | None, error: str | None = None) -> Segment:
    """A call segment (complete, or pending when built from a partial text)."""
    return Segment("call", raw, name=name, args=args, error=error)


def marker_pattern(markers: Iterable[str]) -> re.Pattern[str]:
    """A regex that finds the first of several literal markers (longest first where they overlap)."""
    return re.compile("|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True)))


def held_suffix(text: str, markers: Iterable[str], start: int = 0) -> int:
    """Length of the longest tail of text[start:] that is a proper prefix of a marker (it may become one)."""
    best = 0
    room = len(text) - start
    for marker in markers:
        for size in range(min(len(marker) - 1, room), best, -1):
            if text.endswith(marker[:size]):
                best = size
                break
    return best


def skip_space(text: str, pos: int, extra: str = "") -> int:
    """Index of the first character at or after pos that is neither whitespace nor in `extra`."""
    while pos < len(text) and (text[pos].isspace() or text[pos] in extra):
        pos += 1
    return pos


_STRUCTURE = re.compile(r'[{}\[\]"]')
_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*', re.S)

JsonMemo = dict[int, tuple[int, int, bool]]
"""Where json_end stopped for an object start: (position, depth, inside a string), to resume there."""


def json_end(text: str, start: int, memo: JsonMemo | None = None) -> int | None:
    """Index just past the JSON object/array opening at text[start]; None while it is incomplete.

    Only brackets outside strings are counted: the text is checked for validity later, by json.loads. With a
    `memo`, a scan of a growing text resumes where the previous one stopped (a long call is not rescanned on
    every token); the caller keys it to one text that only grows.
    """
    pos, depth, in_string = start, 0, False
    if memo is not None and start in memo and memo[start][0] <= len(text):
        pos, depth, in_string = memo[start]
    while True:
        if in_string:
            pos = _STRING_REST.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= len(text) or text[pos] != '"':  # the text ends in the string (maybe after a backslash)
                break
            pos, in_string = pos + 1, False  # past the closing quote
            continue
        match = _STRUCTURE.search(text, pos)
        if match is None:
            pos = len(text)
            break
        pos = match.end()
        if match.group() == '"':
            in_string = True
            continue
        depth += 1 if match.group() in "{[" else -1
        if depth == 0:
            if memo is not None:
                memo.pop(start, None)
            return pos
    if memo is not None:
        memo[start] = (pos, depth, in_string)
    return None


def json_prefix(text: str, start: int, end: int, memo: JsonMemo | None = None) -> str:
    """The raw JSON value opening at text[start], cut at `end` while it is still incomplete."""
    stop = json_end(text[:end] if end < len(text) else text, start, memo)
    return text[start : stop if stop is not None else end]


def object_members(text: str) -> dict[str, tuple[int, int]] | None:
    """Top-level members of one complete JSON object text: key -> (start, end) of its raw value.

    None when the text is not exactly one JSON object. Raw spans let a call keep its arguments exactly as the
    model wrote them, so the streamed fragments and the final arguments are the same text.
    """
    decoder = json.JSONDecoder()
    try:
        if not isinstance(json.loads(text), dict):
            return None
        spans: dict[str, tuple[int, int]] = {}
        pos = skip_space(text, text.index("{") + 1)
        while text[pos] != "}":
            key, pos = decoder.raw_decode(text, pos)
            pos = skip_space(text, skip_space(text, pos) + 1)  # past the ':'
            _, end = decoder.raw_decode(text, pos)
            spans[key] = (pos, end)
            pos = skip_space(text, end)
            if text[pos] == ",":
                pos = skip_space(text, pos + 1)
        return spans
    except (ValueError, IndexError):
        return None


def object_arguments(value_text: str) -> str | None:
    """Arguments as a JSON object text, from a raw value: an object, or a string that holds one."""
    value_text = value_text.strip()
    try:
        value = json.loads(value_text)
    except ValueError:
        return None
    if isinstance(value, dict):
        return value_text
    if isinstance(value, str):  # some models serialize the arguments twice
        try:
            inner = json.loads(value)
        except ValueError:
            return None
        return value.strip() if isinstance(inner, dict) else None
    return None


_NAME_FIRST = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')


def call_from_object(raw: str, keys: tuple[str, ...], required: bool) -> tuple[str | None, str | None, str | None]:
    """(name, arguments, error) of a `{"name": ..., "<key>": {...}}` call object written as raw JSON text."""
    members = object_members(raw)
    if members is None:
        return None, None, "not a JSON object"
    if "name" not in members:
        return None, None, "no name"
    name = json.loads(raw[slice(*members["name"])])
    if not isinstance(name, str):
        return None, None, "name is not a string"
    key = next((k for k in keys if k in members), None)
    if key is None:
        return (name, None, "no arguments") if required else (name, "{}", None)
    args = object_arguments(raw[slice(*members[key])])
    if args is None:
        return name, None, "arguments are not a JSON object"
    return name, args, None


def partial_call_object(
    text: str, start: int, keys: tuple[str, ...], memo: JsonMemo | None = None
) -> tuple[str | None, str | None]:
    """(name, arguments prefix) of a call object that is still being written, when the name comes first."""
    match = _NAME_FIRST.match(text, start)
    if match is None:
        return None, None
    try:
        name = json.loads(match.group(1))
    except ValueError:
        return None, None
    keys_alt = "|".join(re.escape(k) for k in keys)
    args = re.compile(rf'\s*,\s*"(?:{keys_alt})"\s*:\s*(?=\{{)').match(text, match.end())
    if args is None:
        return name, None
    return name, json_prefix(text, args.end(), len(text), memo)


@dataclass
class TextRun:
    """Plain text read up to the next call opener: `text` ends at `end`; `opener` is where a call starts."""

    text: str
    end: int
    opener: re.Match[str] | None


def read_text(text: str, pos: int, opener: re.Pattern[str], markers: Iterable[str], final: bool) -> TextRun:
    """Content from pos to the next opener match, holding back a tail that may still grow into an opener."""
    match = opener.search(text, pos)
    if match is not None:
        return TextRun(text[pos : match.start()], match.start(), match)
    end = len(text) if final else len(text) - held_suffix(text, markers, pos)
    return TextRun(text[pos:end], end, None)


def read_gap(text: str, pos: int, run_at: Callable[[int], TextRun], final: bool, seen: bool, skip: str = "") -> TextRun:
    """Read content right after a call, where whitespace (and `skip` separators) is held back.

    It is dropped before another call or the end, and before the first content of the output (content never
    starts with blank lines); between two pieces of content the whitespace is kept.
    """
    start = skip_space(text, pos, skip)
    run = run_at(start)
    if run.text:
        gap = "".join(c for c in text[pos:start] if c.isspace()) if seen else ""
        return TextRun(gap + run.text, run.end, run.opener)
    if run.opener is not None or final:
        return run
    return TextRun("", pos, None)
