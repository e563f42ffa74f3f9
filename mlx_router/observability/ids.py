"""Request ids: the client's `X-Request-ID` when it is a sane one, else a new one (see `requests.py`)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(frozen=True)
class RequestId:
    """A request's id, and whether the client chose it."""

    value: str
    from_client: bool = False

    @classmethod
    def new(cls) -> RequestId:
        return cls(uuid.uuid4().hex)

    @classmethod
    def from_header(cls, header: bytes | None) -> RequestId:
        """The client's id when it is sane, else a new one (an odd header must not reach the logs)."""
        if header is not None:
            text = header.decode("latin-1").strip()
            if _SANE_ID.fullmatch(text):
                return cls(text, from_client=True)
        return cls.new()

    def response_id(self, prefix: str) -> str:
        """The id of the response body: `chatcmpl-<id>`, `cmpl-<id>`."""
        return f"{prefix}-{self.value}"

    def engine_id(self, prefix: str) -> str:
        """The id the engine knows the generation by: the response id, made unique when the client chose it."""
        base = self.response_id(prefix)
        return f"{base}.{uuid.uuid4().hex[:6]}" if self.from_client else base
