"""Log handlers and files (observability/logs.py), the engine's records on their way to the server, request ids
and the one end line per request (observability/requests.py)."""

from __future__ import annotations

import json
import logging
import pickle
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlx_router.observability.ids import RequestId
from mlx_router.observability.logs import (
    EngineLogHandler,
    LogConfig,
    build_handlers,
    handle_engine_record,
    record_fields,
)
from mlx_router.observability.requests import RequestRecord, end_fields, end_line


@pytest.fixture
def logger(tmp_path: Path):
    """A logger of its own (propagating nowhere) with the handlers under test; closed after the test."""
    log = logging.getLogger(f"test-logs-{tmp_path.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)


def _install(log: logging.Logger, cfg: LogConfig) -> None:
    for handler in build_handlers(cfg):
        log.addHandler(handler)


def test_files_rotate_at_their_size_and_keep_the_configured_count(logger, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    _install(logger, LogConfig("info", folder, max_bytes=2000, backup_count=2, console=False))
    for i in range(200):
        logger.info("line %03d %s", i, "x" * 40)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["mlx_router.error.log", "mlx_router.log", "mlx_router.log.1", "mlx_router.log.2"]
    for name in names[1:]:
        assert (folder / name).stat().st_size <= 2000
    assert "line 199 " in (folder / "mlx_router.log").read_text()  # the newest in the current file
    assert "line 000 " not in "".join((folder / n).read_text() for n in names)  # the oldest rotated away


def test_error_log_takes_warnings_and_errors_with_tracebacks_and_level_filters_the_main_log(logger, tmp_path) -> None:
    _install(logger, LogConfig("info", tmp_path, console=False))
    logger.debug("not written")
    logger.info("started")
    logger.warning("memory pressure normal -> high")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    main = (tmp_path / "mlx_router.log").read_text()
    errors = (tmp_path / "mlx_router.error.log").read_text()
    assert "not written" not in main and " INFO " in main and "started" in main
    assert "started" not in errors and " WARNING " in errors and " ERROR " in errors
    assert "Traceback" in errors and "ValueError: boom" in errors
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO test-logs-\S+: started$", main.splitlines()[0])


def test_json_lines_carry_the_extra_fields(logger, tmp_path: Path) -> None:
    _install(logger, LogConfig("info", tmp_path, json_lines=True, console=False))
    logger.info("r1 POST /v1/chat/completions 200 stop", extra={"request": {"id": "r1", "status": 200}})
    (line,) = (tmp_path / "mlx_router.jsonl").read_text().splitlines()
    data = json.loads(line)
    assert data["message"] == "r1 POST /v1/chat/completions 200 stop"
    assert data["request"] == {"id": "r1", "status": 200}
    assert data["level"] == "INFO" and data["time"].endswith("+00:00") and data["process"] == "MainProcess"
    assert not (tmp_path / "mlx_router.jsonl").with_name("mlx_router.json").exists()


def test_no_folder_means_the_console_only(tmp_path: Path) -> None:
    handlers = build_handlers(LogConfig("info", None))
    assert [type(h) for h in handlers] == [logging.StreamHandler]
    assert build_handlers(LogConfig("info", None, console=False)) == []


def test_engine_records_reach_the_servers_handlers_with_message_traceback_and_extras(logger, tmp_path) -> None:
    _install(logger, LogConfig("debug", tmp_path, json_lines=True, console=False))
    sent: list[Any] = []
    engine_side = logging.getLogger("engine-side-test")
    engine_side.propagate = False
    engine_side.setLevel(logging.DEBUG)
    handler = EngineLogHandler(lambda msg: sent.append(pickle.loads(pickle.dumps(msg))) or True)
    engine_side.addHandler(handler)
    try:
        engine_side.info("chatcmpl-x: %d tokens", 5, extra={"request_id": "x", "thing": object()})
        try:
            raise RuntimeError("kernel")
        except RuntimeError:
            engine_side.exception("step failed")
    finally:
        engine_side.removeHandler(handler)
    assert [kind for kind, _ in sent] == ["log", "log"]
    for _, fields in sent:
        fields["name"] = logger.name  # as the server would route a record of its own logger
        handle_engine_record(fields)
    main = (tmp_path / "mlx_router.log").read_text()
    assert "chatcmpl-x: 5 tokens" in main and "RuntimeError: kernel" in main
    records = [json.loads(line) for line in (tmp_path / "mlx_router.jsonl").read_text().splitlines()]
    assert records[0]["request_id"] == "x" and "thing" not in records[0]  # only plain extras travel
    assert "RuntimeError: kernel" in records[1]["traceback"]


def test_an_engine_record_the_server_cannot_take_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    handler = EngineLogHandler(lambda msg: False)
    handler.handle(logging.makeLogRecord({"name": "mlx_router.core.pool", "msg": "unloaded m", "levelno": 20}))
    assert "unloaded m" in capsys.readouterr().err


def test_record_fields_pickle_without_the_original_args() -> None:
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "%s and %s", (object(), 2), None)
    fields = record_fields(record)
    assert fields["msg"].endswith(" and 2") and fields["args"] is None
    pickle.dumps(fields)


# -- request ids and end lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"abc-123", True),
        (b"req_01J9Z8.part:2", True),
        (b"has space", False),
        (b"x" * 129, False),
        (b"a/b", False),
        (b"", False),
        (None, False),
    ],
)
def test_a_client_id_is_kept_only_when_sane(header: bytes | None, kept: bool) -> None:
    rid = RequestId.from_header(header)
    assert (rid.value == (header or b"").decode()) is kept
    assert rid.from_client is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", rid.value)


def test_response_and_engine_ids() -> None:
    mine = RequestId("abc", from_client=True)
    assert mine.response_id("chatcmpl") == "chatcmpl-abc"
    first, second = mine.engine_id("chatcmpl"), mine.engine_id("chatcmpl")
    assert first != second and first.startswith("chatcmpl-abc.")  # a client may send one id twice at once
    made = RequestId.new()
    assert made.engine_id("cmpl") == made.response_id("cmpl") == f"cmpl-{made.value}"


def _session(**kw: Any) -> Any:
    usage = SimpleNamespace(prompt_tokens=kw.pop("prompt", 12), cached_tokens=kw.pop("cached", 4), completion_tokens=0)
    usage.completion_tokens = kw.pop("completion", 0)
    fields = {
        "outcome": None,
        "usage": usage,
        "request": SimpleNamespace(model_id="m", images=[]),
        "first_token_at": None,
        "last_token_at": None,
        "queue_seconds": None,
        "engine_queue_seconds": None,
    }
    fields.update(kw)
    return SimpleNamespace(**fields)


def _line(record: RequestRecord, ended: float) -> str:
    return end_line(end_fields(record, ended))


def test_end_line_of_a_finished_generation() -> None:
    record = RequestRecord(RequestId("r1", True), "POST", "/v1/chat/completions", started=100.0, status=200)
    record.model = "m"
    record.session = _session(
        outcome="stop",
        completion=11,
        first_token_at=100.05,
        last_token_at=100.15,
        queue_seconds=0.01,
        engine_queue_seconds=0.0,
    )
    assert _line(record, 100.2) == (
        "r1 POST /v1/chat/completions 200 stop model=m prompt=12 cached=4 completion=11 queue=0.010s "
        "ttft=0.050s tok/s=100.0 time=0.200s"
    )


@pytest.mark.parametrize(
    ("status", "session", "expected"),
    [
        (None, _session(completion=3, first_token_at=1.0, engine_queue_seconds=0.0), " - cancelled model=m"),
        (200, _session(completion=3, first_token_at=1.0, engine_queue_seconds=0.0), " 200 cancelled model=m"),
        (200, _session(outcome="timeout", engine_queue_seconds=0.0), " 200 timeout model=m"),
        (429, _session(outcome="refused"), " 429 refused model=m prompt=12 time="),
        (503, None, " 503 refused model=m time="),
        (400, None, " 400 invalid model=m time="),
        (500, _session(outcome="error", engine_queue_seconds=0.0), " 500 error model=m prompt=12 cached=4 "),
    ],
)
def test_every_end_has_its_outcome(status: int | None, session: Any, expected: str) -> None:
    record = RequestRecord(RequestId("r2"), "POST", "/v1/completions", started=0.0, status=status, model="m")
    record.session = session
    assert expected in _line(record, 2.0)


def test_plain_requests_end_without_outcome_or_model_and_odd_model_names_are_quoted() -> None:
    plain = RequestRecord(RequestId("r3"), "GET", "/v1/models", started=0.0, status=200)
    assert _line(plain, 0.0015) == "r3 GET /v1/models 200 time=0.002s"
    odd = RequestRecord(RequestId("r4"), "POST", "/v1/chat/completions", started=0.0, status=404, model="a b\nc")
    assert "404 invalid model='a b\\nc' " in _line(odd, 0.0)


def test_logs_module_imports_no_mlx() -> None:
    assert "mlx_router.observability.logs" in sys.modules
    import mlx_router.observability.logs as logs

    assert "mlx" not in logs.__dict__


@pytest.mark.parametrize(
    ("path", "level"),
    [("/v1/dashboard/activity", logging.DEBUG), ("/v1/dashboard/logs", logging.DEBUG), ("/v1/models", logging.INFO)],
)
def test_the_dashboards_polls_do_not_fill_the_log(path: str, level: int, caplog: pytest.LogCaptureFixture) -> None:
    from mlx_router.observability.requests import finish

    with caplog.at_level(logging.DEBUG, logger="mlx_router.observability.requests"):
        finish(RequestRecord(RequestId("r3"), "GET", path, started=0.0, status=200), None)
    assert [r.levelno for r in caplog.records] == [level]
