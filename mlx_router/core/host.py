"""The engine's side of the wire: commands in, token events and reports out.

`EngineHost` runs where MLX runs (the engine process, or a thread of the server's own process): it owns the MLX
worker thread and the model pool, takes messages from the HTTP side (`handle`, any thread) and answers through
`send`, a callable the transport gives it. Messages are plain tuples of picklable values:

  in:  ("call", call_id, command)   a typed command (`engine/commands.py`) answered by ("reply", ...); EmbedInputs
                                    is answered once the runner has computed its rows (with other requests')
       ("post", command)            StartGeneration, CancelGeneration: no answer
  out: ("events", [(request_id, event tuple), ...])   every event of one worker iteration, in one message
       ("reply", call_id, ok, value)
       ("report", EngineReport)     models and memory, after a command and at most every 0.1 s while busy
       ("fatal", reason)            a distributed group broke up: the server must answer 503 and exit

Launched as a rank of a distributed group (`core/group.py`), every rank runs an EngineHost: rank 0's takes the
messages and sends them to the others each round (`core/lockstep.py`); the others apply them and send nothing.

A token event travels as a tuple (`engine/wire.py`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mlx_router.config.settings import Settings
from mlx_router.core.embeddings import EmbeddingJob, EmbeddingRunner
from mlx_router.core.group import GROUP_LOST_EXIT, join_group
from mlx_router.core.loader import free_memory
from mlx_router.core.lockstep import STOP, Lockstep
from mlx_router.core.pool import ModelPool
from mlx_router.core.worker import MLXWorker
from mlx_router.engine.commands import (
    CancelGeneration,
    CheckModel,
    EmbedInputs,
    EngineReport,
    EvictModels,
    LoadModel,
    LoadResult,
    ReadMemory,
    StartGeneration,
    UnloadModel,
)
from mlx_router.engine.params import GenerationRequest, TokenEvent
from mlx_router.engine.resource_monitor import GB, ResourceMonitor, device_memory_bytes, mlx_readings
from mlx_router.engine.wire import Message, event_tuple
from mlx_router.errors import InvalidRequestError, ModelUnloadedError, RouterError

logger = logging.getLogger(__name__)

REPORT_INTERVAL = 0.1  # seconds between reports while the engine is busy
IDLE_TRIM_SECONDS = 2.0  # idle this long after work, the engine gives freed memory back to the system


def _grammar_processors() -> Callable[[Any, Any], Any]:
    """The factory that turns grammars into logits processors for a loaded model (llguidance)."""
    from mlx_router.core.constrained import ConstraintCompiler

    def factory(tokenizer: Any, loaded: Any) -> Any:
        args = getattr(loaded.model, "args", None)
        size = getattr(args, "vocab_size", None)
        compiler = ConstraintCompiler(tokenizer, vocab_size=int(size) if isinstance(size, int) else None)
        compiler.prepare()  # build llguidance's tokenizer at load, not in the first constrained request
        return compiler.processor

    return factory


class EngineHost:
    """The MLX worker and the model pool, driven by messages."""

    def __init__(self, settings: Settings, send: Callable[[Message], None], exit_on_fatal: bool = False) -> None:
        self._send = send
        self.worker = MLXWorker()
        self.group = join_group(settings.distributed)
        self.group_budget: int | None = None  # a group's: ranks x the smallest rank's budget (set by `_hello`)
        monitor = ResourceMonitor(settings.defaults, group_budget=lambda: self.group_budget)
        self.pool = ModelPool(settings, self.worker, monitor, _grammar_processors(), group=self.group)
        self._exit_on_fatal = exit_on_fatal  # the engine's own process (or a follower rank): leave at once
        self._group_lost = False
        self.lockstep: Lockstep | None = None
        if self.group is not None:
            self.lockstep = Lockstep(
                self.group,
                settings.distributed,
                self.worker,
                self._apply,
                self._readings,
                self._fatal,
                self._unload,
                self._report,
            )
        self._events: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._last_report = 0.0
        self.worker.add_iteration_hook(self._flush)
        self._device_memory: int | None = None
        self._idle_since = 0  # counts the times the engine went idle; a trim is for the latest one only
        self._calls: dict[type, Callable[[Any], Any]] = {
            CheckModel: lambda c: self.pool.check(c.entry),
            LoadModel: lambda c: self._load(c.entry, c.evict),
            EvictModels: lambda c: self.pool.evict(list(c.model_ids)),
            UnloadModel: lambda c: self.pool.unload(c.model_id),
            ReadMemory: lambda c: self._memory(c.clear_cache),
        }
        # answered later, once the runner has computed them with other requests' work
        self._deferred: dict[type, Callable[[int, Any], None]] = {EmbedInputs: self._embed}
        self._posts: dict[type, Callable[[Any], None]] = {
            StartGeneration: lambda c: self._add(c.model_id, c.request),
            CancelGeneration: self._cancel,
        }

    def start(self) -> None:
        self.worker.post(self._hello)  # before the loop's first round (a group's first collective operation)
        self.worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self.lockstep is not None:  # every rank unloads and ends in the same round
            if self.worker.alive and not self._group_lost:  # a lost group's worker may be stuck in a collective
                self.lockstep.submit(STOP)
                self.worker.join(timeout)
            return
        done = threading.Event()

        def unload_all() -> None:
            try:
                self.pool.unload_all()
            finally:
                done.set()

        if self.worker.alive:
            self.worker.post(unload_all)
            done.wait(timeout)
        self.worker.stop()

    # -- any thread ----------------------------------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        """Take one message from the HTTP side; the work runs on the worker thread."""
        if self.lockstep is not None:
            self.lockstep.submit(msg)  # applied on every rank in the next round
        else:
            self.worker.post(lambda: self._apply(msg))

    # -- worker thread -------------------------------------------------------------------------------------
    def _apply(self, msg: Message) -> None:
        kind = msg[0]
        if kind == "call":
            _, call_id, command = msg
            self._call(call_id, command)
        elif kind == "post":
            command = msg[1]
            handler = self._posts.get(type(command))
            if handler is None:
                logger.error("engine: unknown command %r", type(command).__name__)
            else:
                handler(command)
        else:
            logger.error("engine: unknown message %r", kind)

    def _hello(self) -> None:
        self._device_memory = device_memory_bytes()
        if self.group is not None:  # every rank's first collective operation, before any round
            monitor = self.pool.monitor
            budgets = self.group.exchange([monitor.own_budget_bytes()])
            self.group_budget = self.group.size * min(row[0] for row in budgets)
        self._report()

    def _call(self, call_id: int, command: Any) -> None:
        deferred = self._deferred.get(type(command))
        if deferred is not None:
            deferred(call_id, command)
            return
        try:
            handler = self._calls.get(type(command))
            if handler is None:
                raise InvalidRequestError(f"the engine has no command {type(command).__name__}")
            value = handler(command)
        except Exception as e:  # handed to the caller
            if self.lockstep is not None and not isinstance(e, RouterError):
                # in a group, an unexpected failure (a rank lost inside a load's collective operations) leaves
                # the ranks in states no one can vouch for: the group ends before anyone is answered
                self._fatal(f"the distributed group failed on rank {self.lockstep.group.rank} during a command: {e}")
            self._reply(call_id, False, e if isinstance(e, RouterError) else RuntimeError(f"{type(e).__name__}: {e}"))
        else:
            self._reply(call_id, True, value)

    def _load(self, entry: Any, evict: Any) -> LoadResult:
        """A load, with one line saying how long it took (weights, warm-up, evictions) and what it holds."""
        t0 = time.perf_counter()
        try:
            result = self.pool.load(entry, evict)
        except Exception as e:
            logger.warning("loading %s failed after %.2fs: %s", entry.id, time.perf_counter() - t0, e)
            raise
        logger.info(
            "%s ready in %.2fs: %.2f GB budgeted (weights x safety_margin), KV %.1f kB a token; MLX memory %.2f GB",
            entry.id,
            time.perf_counter() - t0,
            result.cost_bytes / GB,
            result.kv_per_token / 1024,
            mlx_readings()[0] / GB,
        )
        return result

    def _embed(self, call_id: int, command: EmbedInputs) -> None:
        runner = self.pool.runner(command.model_id)
        if runner is None:  # evicted or unloaded between the HTTP side's load and this request
            self._reply(call_id, False, ModelUnloadedError(f"{command.model_id} is not loaded", retry_after=1))
            return
        if not isinstance(runner, EmbeddingRunner):
            self._reply(call_id, False, InvalidRequestError(f"{command.model_id} is not an embedding model"))
            return

        def reply(result: list[bytes] | BaseException) -> None:
            if isinstance(result, BaseException):
                error = (
                    result if isinstance(result, RouterError) else RuntimeError(f"{type(result).__name__}: {result}")
                )
                self._reply(call_id, False, error)
            else:
                self._reply(call_id, True, result)

        rows = [list(row) for row in command.rows]
        runner.add(EmbeddingJob(command.request_id, rows, command.dimensions, reply))

    def _reply(self, call_id: int, ok: bool, value: Any) -> None:
        self._flush()  # events emitted before the reply arrive before it,
        self._report()  # and so does the state the command left, for whoever reads it after the answer
        self._send(("reply", call_id, ok, value))

    def _cancel(self, command: CancelGeneration) -> None:
        runner = self.pool.runner(command.model_id)
        if isinstance(runner, EmbeddingRunner):
            runner.cancel(command.request_id)
        elif runner is not None:
            runner.cancel(command.request_id, command.reason)

    def _add(self, model_id: str, req: GenerationRequest) -> None:
        emit = self._emitter(req.request_id)
        runner = self.pool.runner(model_id)
        if runner is None:  # evicted or unloaded between the HTTP side's load and this request
            emit(TokenEvent([], finish_reason="error", error=ModelUnloadedError(f"{model_id} is not loaded")))
            return
        if isinstance(runner, EmbeddingRunner):  # the HTTP side refuses this first; kept from the batch loop
            emit(TokenEvent([], finish_reason="error", error=InvalidRequestError(f"{model_id} is an embedding model")))
            return
        try:
            runner.add(req, emit)
        except ValueError as e:  # e.g. a grammar that does not compile: the client gets the reason
            emit(TokenEvent([], finish_reason="error", error=InvalidRequestError(str(e))))
        except Exception as e:
            emit(TokenEvent([], finish_reason="error", error=e))

    def _emitter(self, request_id: str) -> Callable[[TokenEvent], None]:
        def emit(event: TokenEvent) -> None:
            with self._lock:
                self._events.append((request_id, event_tuple(event)))

        return emit

    def _flush(self) -> None:
        """After every worker iteration: the iteration's events in one message, and a report when one is due."""
        with self._lock:
            events, self._events = self._events, []
        if events:
            self._send(("events", events))
            idle = not self.pool.busy()
            if time.monotonic() - self._last_report >= REPORT_INTERVAL or idle:
                self._report()
            if idle:
                self._trim_when_still_idle()

    def _trim_when_still_idle(self) -> None:
        """After a burst, the buffers it freed stay with MLX's cache and the C heap (tens to hundreds of MB of
        a vision burst on Linux); once the engine has stayed idle a moment they go back to the system. Right
        away would make every lone request allocate afresh."""
        self._idle_since += 1
        mark = self._idle_since

        def trim() -> None:
            if mark == self._idle_since and not self.pool.busy():
                free_memory()
                self._report()

        timer = threading.Timer(IDLE_TRIM_SECONDS, lambda: self.worker.post(trim))
        timer.daemon = True
        timer.start()

    def _report(self) -> None:
        self._last_report = time.monotonic()
        active, cached, peak = mlx_readings()
        report = EngineReport(self.pool.report(), (active, cached, peak), self._device_memory)
        if self.lockstep is not None:
            report = dataclasses.replace(report, ranks=self.lockstep.ranks, group_budget=self.group_budget)
        self._send(("report", report))

    # -- a distributed group -------------------------------------------------------------------------------
    def _readings(self) -> list[int]:
        """This rank's memory and requests, as `core/lockstep.py` gathers them for /v1/health."""
        active, cached, peak = mlx_readings()
        models = self.pool.report().values()
        running, queued = sum(m["running"] for m in models), sum(m["queued"] for m in models)
        ready = sum(1 for m in models if m["state"] == "ready")
        device = self._device_memory or 0
        return [active, cached, peak, device, self.pool.monitor.own_budget_bytes(), running, queued, ready]

    def _unload(self) -> None:
        self.pool.unload_all()

    def _fatal(self, reason: str) -> None:
        """The group broke up (any thread): the server learns why, and a process of its own leaves at once."""
        logger.error("%s", reason)
        self._group_lost = True
        self._send(("fatal", reason))
        if self._exit_on_fatal:
            logging.shutdown()
            os._exit(GROUP_LOST_EXIT)

    def _memory(self, clear_cache: bool) -> dict[str, int]:
        import mlx.core as mx

        if clear_cache:
            mx.clear_cache()
        active, cached, peak = mlx_readings()
        return {"active": active, "cache": cached, "peak": peak}
