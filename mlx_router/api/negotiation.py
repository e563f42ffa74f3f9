"""Whether to stream a response: the request's `stream` field, else `defaults.stream` for clients that can read one.

OpenAI's API treats an omitted `stream` as false, and the official clients omit it for every non-streaming call
(with `Accept: application/json`). Streaming to them because of a server default hands them raw SSE as a string.
So the default applies only to a request that omits `stream` and names a stream media type in its `Accept`
header; a wildcard (`*/*`, what curl and most HTTP libraries send) does not count.
"""

from __future__ import annotations

STREAM_MEDIA_TYPES = frozenset({"text/event-stream", "application/x-ndjson"})


def accepts_stream(accept: str | None) -> bool:
    """True when ``accept`` names a stream media type with a quality above 0 (`text/event-stream;q=0` refuses)."""
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() in STREAM_MEDIA_TYPES and _quality(params) > 0:
            return True
    return False


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def wants_stream(requested: bool | None, accept: str | None, default: bool) -> bool:
    """The request's own choice; without one, ``default`` only for a client whose ``accept`` names a stream."""
    if requested is not None:
        return requested
    return default and accepts_stream(accept)
