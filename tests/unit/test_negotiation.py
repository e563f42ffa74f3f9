"""Whether a request is streamed: its own `stream`, else `defaults.stream` only for a client that names a stream
media type in `Accept` (the official clients send `Accept: application/json` and omit `stream`)."""

from __future__ import annotations

import pytest

from mlx_router.api.negotiation import accepts_stream, wants_stream


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("application/json", False),
        ("*/*", False),
        ("text/*", False),
        ("text/event-stream", True),
        ("Text/Event-Stream", True),
        ("application/json, text/event-stream", True),
        ("text/event-stream;q=0.5, application/json", True),
        ("text/event-stream; q=0", False),
        ("text/event-stream;q=bad", False),
        ("application/x-ndjson", True),
    ],
)
def test_accepts_stream(accept: str | None, expected: bool) -> None:
    assert accepts_stream(accept) is expected


@pytest.mark.parametrize(
    ("requested", "accept", "default", "expected"),
    [
        (True, "application/json", False, True),  # the request's own choice wins either way
        (False, "text/event-stream", True, False),
        (None, "application/json", True, False),  # the openai client's non-streaming create()
        (None, "*/*", True, False),
        (None, "text/event-stream", True, True),
        (None, "text/event-stream", False, False),
    ],
)
def test_wants_stream(requested: bool | None, accept: str, default: bool, expected: bool) -> None:
    assert wants_stream(requested, accept, default) is expected
