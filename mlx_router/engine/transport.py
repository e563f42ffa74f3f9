"""How the HTTP side reaches the engine: a process of its own (the default), or a thread of this process.

In a process of its own the MLX worker thread shares its Python interpreter with nothing but the pipe's
reader: the HTTP side's per-token work (SSE chunks, detokenizing, parsing) runs on another core and never holds
the lock the worker needs to build the next step. An engine that crashes (a fatal error in MLX or the GPU
driver) takes only itself down; the client starts a new one. In a thread (`engine_process: false`) nothing is
pickled, which tests and embedding applications may prefer.

Both deliver the engine's messages to the client through `deliver`, which must be safe to call from any thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Protocol

from mlx_router.config.settings import Settings
from mlx_router.engine.wire import Message
from mlx_router.observability.logs import EngineLogHandler, handle_engine_record

logger = logging.getLogger(__name__)

Deliver = Callable[[Message], None]


class Transport(Protocol):
    def start(self) -> None: ...

    def send(self, msg: Message) -> bool:
        """Hand `msg` to the engine; False when it cannot be (the engine is gone), never a silent drop."""
        ...

    def stop(self) -> None: ...

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...


class ThreadTransport:
    """The engine on a thread of this process."""

    def __init__(self, settings: Settings, deliver: Deliver, on_exit: Callable[[int | None], None]) -> None:
        from mlx_router.core.host import EngineHost

        self._host = EngineHost(settings, deliver)

    def start(self) -> None:
        self._host.start()

    def send(self, msg: Message) -> bool:
        self._host.handle(msg)
        return True

    def stop(self) -> None:
        self._host.stop()

    @property
    def alive(self) -> bool:
        return self._host.worker.alive

    @property
    def pid(self) -> int | None:
        return os.getpid()


class ProcessTransport:
    """The engine in a child process, spoken to over a pipe with pickled messages."""

    def __init__(self, settings: Settings, deliver: Deliver, on_exit: Callable[[int | None], None]) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork would copy this process's threads' locks
        self._conn, child = ctx.Pipe(duplex=True)
        level = logging.getLogger().getEffectiveLevel()
        self._proc = ctx.Process(
            target=run_engine_process, args=(child, settings, level), name="mlx-router-engine", daemon=True
        )
        self._child_end = child
        self._deliver = deliver
        self._on_exit = on_exit
        self._send_lock = threading.Lock()
        self._stopping = False
        self._reader = threading.Thread(target=self._read, name="engine-reader", daemon=True)

    def start(self) -> None:
        self._proc.start()
        self._child_end.close()  # the child holds its end; when it exits, reading here ends
        self._reader.start()
        logger.info("engine process started (pid %s)", self._proc.pid)

    def send(self, msg: Message) -> bool:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            try:
                self._conn.send_bytes(data)
            except (OSError, ValueError):  # the engine is gone (its end of the pipe is closed)
                return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self.send(("stop",))
        if self._reader.ident is not None:
            # The reader sees the pipe close when the engine exits and reaps the process; joining the process
            # here as well raced it (one of two waitpid calls fails, and the engine looked alive).
            self._reader.join(timeout)
        else:
            self._proc.join(timeout)
        if self._proc.is_alive():
            logger.warning("engine process did not stop in %.0fs; killing it", timeout)
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _read(self) -> None:
        while True:
            try:
                msg = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            if msg[0] == "log":  # the engine's log record, handled here: it never waits for the event loop
                handle_engine_record(msg[1])
            else:
                self._deliver(msg)
        self._proc.join(5)
        if not self._stopping:
            self._on_exit(self._proc.exitcode)


def run_engine_process(conn: Connection, settings: Settings, log_level: int) -> None:
    """The engine process: an `EngineHost` fed from the pipe until the server says stop or goes away."""
    # Ctrl-C reaches the whole process group, and systemd sends SIGTERM to the whole unit: the server stops the
    # engine itself once its requests are drained (or the pipe closes when the server is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = threading.Lock()

    def deliver(msg: Message) -> bool:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        with lock:
            try:
                conn.send_bytes(data)
            except OSError:  # the server is gone: the reading loop below ends the process
                return False
        return True

    def send(msg: Message) -> None:
        deliver(msg)

    # The engine's records go to the server, whose handlers (console, files) write them: one writer per file
    root = logging.getLogger()
    root.handlers[:] = [EngineLogHandler(deliver)]
    root.setLevel(log_level)
    from mlx_router.core.host import EngineHost

    host = EngineHost(settings, send, exit_on_fatal=True)
    host.start()
    try:
        while True:
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):  # the server is gone
                break
            if msg[0] == "stop":
                break
            host.handle(msg)
    finally:
        host.stop()
        conn.close()
    # Models unloaded, worker stopped: leave without the interpreter's teardown, in which MLX's own threads were
    # destroyed still running ("terminate called without an active exception", an abort at every stop).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def make_transport(settings: Settings, deliver: Deliver, on_exit: Callable[[int | None], None]) -> Transport:
    if settings.defaults.engine_process:
        return ProcessTransport(settings, deliver, on_exit)
    return ThreadTransport(settings, deliver, on_exit)
