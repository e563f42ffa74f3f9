"""Error envelopes chosen by the API a path belongs to: Anthropic's under /v1/messages, OpenAI's elsewhere."""

import pytest

from mlx_router.api.errors import envelope_for, error_body_for
from mlx_router.errors import (
    AuthenticationError,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    RequestTooLargeError,
)


@pytest.mark.parametrize(
    ("error", "anthropic_type"),
    [
        (InvalidRequestError("bad"), "invalid_request_error"),
        (AuthenticationError("no key"), "authentication_error"),
        (ModelNotFoundError("m"), "not_found_error"),
        (RequestTooLargeError("big"), "request_too_large"),
        (OverloadedError("full"), "rate_limit_error"),
        (InsufficientMemoryError("no memory"), "overloaded_error"),
    ],
)
def test_anthropic_paths_get_anthropics_envelope(error, anthropic_type):
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        body = error_body_for(path, error)
        assert body == {"type": "error", "error": {"type": anthropic_type, "message": error.message}}


def test_other_paths_keep_openais_envelope():
    for path in ("/v1/chat/completions", "/v1/messagesx", "/v1/models"):
        body = error_body_for(path, ModelNotFoundError("m"))
        assert body["error"]["code"] == "model_not_found" and "type" not in body
    assert envelope_for("/v1/messages/count_tokens") is envelope_for("/v1/messages")
