"""Where log records go: the console and, when a folder is configured, rotating files.

Files, in `server.log_dir` (the user service sets one, see `mlx_router/service/`):

  mlx_router.log        every record at `log_level`, as the console shows them
  mlx_router.error.log  warnings and errors only, with their tracebacks
  mlx_router.jsonl      with `server.log_json`: every record as one JSON object a line, for log shippers

Each rotates at `log_max_mb`, keeping `log_backup_count` old files (`mlx_router.log.1` is the newest of them).
Only the server's process writes them: the engine process sends its records over its pipe
(`EngineLogHandler`), and the server hands them to these same handlers (`handle_engine_record`).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAIN_LOG = "mlx_router.log"
ERROR_LOG = "mlx_router.error.log"
JSON_LOG = "mlx_router.jsonl"

# What every LogRecord has; anything else on a record came from `extra=` and goes into its JSON line.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@dataclass(frozen=True)
class LogConfig:
    """How the server logs (from `server.*` and the command line)."""

    level: str = "info"
    directory: Path | None = None
    max_bytes: int = 10 * 1024**2
    backup_count: int = 5
    json_lines: bool = False
    console: bool = True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, process, message, the fields passed as
    `extra=` (a request's end line carries `request`), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["traceback"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def build_handlers(cfg: LogConfig) -> list[logging.Handler]:
    """The console handler (unless turned off) and, with a folder, the rotating files (the folder is made)."""
    level = _level(cfg.level)
    text = logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = []
    if cfg.console:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(text)
        handlers.append(console)
    if cfg.directory is not None:
        cfg.directory.mkdir(parents=True, exist_ok=True)
        files = [(MAIN_LOG, level, text), (ERROR_LOG, logging.WARNING, text)]
        if cfg.json_lines:
            files.append((JSON_LOG, level, JsonLineFormatter()))
        for name, file_level, formatter in files:
            handler = logging.handlers.RotatingFileHandler(
                cfg.directory / name, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count, encoding="utf-8"
            )
            handler.setLevel(file_level)
            handler.setFormatter(formatter)
            handlers.append(handler)
    return handlers


def configure_logging(cfg: LogConfig) -> list[logging.Handler]:
    """Install the handlers on the root logger in place of any there (e.g. a basicConfig's), which every
    module's logger, uvicorn's and the engine's forwarded records reach. Returns them (to close at exit)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handlers = build_handlers(cfg)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(_level(cfg.level))
    return handlers


def _level(name: str) -> int:
    return logging.getLevelName(name.upper())


# -- the engine process's records ------------------------------------------------------------------------------
class EngineLogHandler(logging.Handler):
    """In the engine process: each record goes to the server as `("log", fields)` through `send`, which returns
    False when the server cannot be reached (the record then goes to stderr, not lost)."""

    def __init__(self, send: Callable[[tuple[str, dict[str, Any]]], bool]) -> None:
        super().__init__()
        self._send = send
        self._fallback = logging.StreamHandler(sys.stderr)
        self._fallback.setFormatter(logging.Formatter(TEXT_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = record_fields(record)
        except Exception:
            self.handleError(record)
            return
        if not self._send(("log", fields)):
            self._fallback.handle(record)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as plain, picklable values: the message formatted, the traceback as text, and only the
    `extra=` fields that are plain data."""
    fields = {k: v for k, v in vars(record).items() if k in _RECORD_ATTRS}
    fields["msg"], fields["args"] = record.getMessage(), None
    if record.exc_info:
        fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
    fields["exc_info"] = fields["stack_info"] = None
    fields.pop("message", None)
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and _plain(value):
            fields[key] = value
    return fields


def handle_engine_record(fields: dict[str, Any]) -> None:
    """In the server: a record the engine sent, through the server's own loggers and handlers."""
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
