"""The recent log in memory, for the dashboard: a logging handler that keeps the last records in a bounded ring.

The server installs one on the root logger for its lifetime (see `services.build_services`) and removes it when
it stops; nothing here is module-level state, so every app (and every test) has its own.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any


class LogRing(logging.Handler):
    """Keeps the last `capacity` records as plain dicts, each with a sequence number, so a reader can ask for
    only what came after the last record it saw. Thread-safe: records come from any thread."""

    def __init__(self, capacity: int = 500, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            entry = {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            }
        except Exception:  # a bad format string must not break the caller's logging
            self.handleError(record)
            return
        with self._guard:
            self._seq += 1
            entry["seq"] = self._seq
            self._records.append(entry)

    def records(self, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """The records with a sequence number above `after`, oldest first, at most the last `limit` of them."""
        with self._guard:
            newer = [r for r in self._records if r["seq"] > after]
        return newer[-limit:] if limit > 0 else []

    def install(self, logger: logging.Logger | None = None) -> None:
        """Receive the records of `logger` (default: the root logger, which every module's logger reaches)."""
        (logger or logging.getLogger()).addHandler(self)

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self)
