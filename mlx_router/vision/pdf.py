"""PDFs to page images and text, in child processes, so a crash or hang in PDFium costs one request only.

The renderer is pypdfium2 (PDFium): faster per page than pdf2image with poppler, no system package, and it knows
the page count and every page's size before rendering, so limits are applied before any work (poppler returned a
1x1 image for a 30,000-pixel page). Figures: bench/HISTORY.md, `python bench/run.py pdf`.

Persistent workers, not a process per PDF: starting a Python process that imports pypdfium2 costs as much as
rendering several pages, so a process per PDF would more than double the cost of the usual short PDF. A worker
lives on between PDFs; one that crashes, times out or breaks the protocol is
killed and a fresh one starts for the next PDF. At most `max_workers` PDFs render at once; a PDF that finds them all
busy for `pdf_timeout_s` gets a 429. Each worker's address space is capped (Linux) so a PDF that asks PDFium for
unbounded memory fails in its worker.

`PdfRenderer.render` blocks (up to the timeout): call it from a thread (`MediaDecoder`'s async methods do), never
on the event loop. Its `close` ends the workers; call it when the server stops.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_router.errors import InvalidRequestError, OverloadedError, RouterError
from mlx_router.vision import pdf_worker
from mlx_router.vision.limits import KEY, MediaBudget, MediaLimits
from mlx_router.vision.media import DecodedImage, PdfDocument

WORKER_START_TIMEOUT_S = 30.0
MEMORY_BASE = 1024**3  # the worker's own code and PDFium's caches, beyond one page's pixels
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class _WorkerFailed(Exception):
    """The worker timed out, died or broke the protocol; it must be killed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "timeout", "crash" or "protocol"


@dataclass(frozen=True)
class RenderJob:
    """What one PDF asks of a worker, with the room left in its request."""

    want_images: bool
    want_text: bool
    image_allowance: int
    pixel_allowance: int

    def message(self, limits: MediaLimits) -> dict[str, Any]:
        return {
            "want_images": self.want_images,
            "want_text": self.want_text,
            "image_allowance": self.image_allowance,
            "pixel_allowance": self.pixel_allowance,
            "max_pages": limits.max_pdf_pages,
            "max_pixels": limits.max_image_pixels,
            "dpi": limits.pdf_dpi,
            "timeout_s": limits.pdf_timeout_s,
        }


def _widen_pipe(fd: int) -> None:
    # A page is megabytes: through Linux's default 64 kB pipe the two processes take turns ~100 times per page;
    # a 1 MB pipe halves the transfer (bench/HISTORY.md).
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass  # not Linux, or a lower pipe-max-size: the default works, only slower


class _Worker:
    """One child process running `pdf_worker`, and its pipes."""

    def __init__(self, memory_limit: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlx_router.vision.pdf_worker", str(memory_limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C meant for the server is the server's to handle (it closes us)
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin.fileno()
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._in, False)
        for fd in (self._in, self._out):
            _widen_pipe(fd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float) -> None:
        message, _ = self.read_frame(time.monotonic() + timeout, max_payload=0)
        if not message.get("ready"):
            raise _WorkerFailed("protocol")

    def send(self, message: dict[str, Any], payload: bytes, deadline: float) -> None:
        data = memoryview(pdf_worker.encode_frame(message, payload))
        while data:
            self._wait(self._in, deadline, write=True)
            try:
                n = os.write(self._in, data[: 1 << 20])
            except BlockingIOError:
                continue
            except OSError:  # the worker died: its broken pipe
                raise _WorkerFailed("crash") from None
            data = data[n:]

    def read_frame(self, deadline: float, max_payload: int) -> tuple[dict[str, Any], bytes]:
        json_len, payload_len = pdf_worker.HEADER.unpack(self._read(pdf_worker.HEADER.size, deadline))
        if json_len > pdf_worker.MAX_JSON_BYTES or payload_len > max_payload:
            raise _WorkerFailed("protocol")  # a worker that parsed hostile data is not believed blindly
        try:
            message = json.loads(self._read(json_len, deadline))
        except ValueError:
            raise _WorkerFailed("protocol") from None
        if not isinstance(message, dict):
            raise _WorkerFailed("protocol")
        return message, self._read(payload_len, deadline)

    def _read(self, n: int, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        done = 0
        while done < n:
            self._wait(self._out, deadline, write=False)
            got = os.readv(self._out, [view[done:]])
            if not got:
                raise _WorkerFailed("crash")
            done += got
        return bytes(buf)

    @staticmethod
    def _wait(fd: int, deadline: float, *, write: bool) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _WorkerFailed("timeout")
        ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
        if not ready[1 if write else 0]:
            raise _WorkerFailed("timeout")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        """Ask the worker to stop (its stdin closes), killing it if it does not."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _page(message: dict[str, Any], payload: bytes) -> DecodedImage:
    try:
        return DecodedImage.from_rgb(payload, int(message["width"]), int(message["height"]))
    except (KeyError, TypeError, ValueError):
        raise _WorkerFailed("protocol") from None


class PdfRenderer:
    """Renders PDFs and reads their text in up to `max_workers` persistent child processes."""

    def __init__(self, limits: MediaLimits, *, max_workers: int = 2) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(max_workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._memory_limit = MEMORY_BASE + 8 * limits.max_image_pixels

    def render(
        self,
        data: bytes,
        budget: MediaBudget,
        *,
        label: str,
        want_images: bool,
        want_text: bool,
        filename: str | None = None,
        param: str | None = None,
    ) -> PdfDocument:
        """The pages (as images, if `want_images`) and text layer (if `want_text`) of the PDF in `data`; rendered
        pages are charged to `budget`. Raises InvalidRequestError for any fault of the PDF or limit it passes."""
        limits = self.limits
        job = RenderJob(
            want_images=want_images,
            want_text=want_text,
            image_allowance=max(0, limits.max_images - budget.images),
            pixel_allowance=max(0, limits.max_request_pixels - budget.pixels),
        )
        if not self._slots.acquire(timeout=limits.pdf_timeout_s):
            raise OverloadedError("every PDF renderer is busy; retry shortly", retry_after=limits.pdf_timeout_s)
        try:
            message, pages = self._run(job, data)
        finally:
            self._slots.release()
        if "error" in message:
            raise self._error(message, label, budget, param)
        if want_images:
            budget.charge_images(len(pages), label, param=param)
            budget.charge_pixels(sum(p.pixels for p in pages), label, param=param)
        texts = [str(t) for t in message.get("texts", [])]
        return PdfDocument(pages=pages, texts=texts, page_count=int(message["page_count"]), filename=filename)

    def _run(self, job: RenderJob, data: bytes) -> tuple[dict[str, Any], list[DecodedImage]]:
        worker = self._take_worker()
        try:
            deadline = time.monotonic() + self.limits.pdf_timeout_s
            worker.send(job.message(self.limits), data, deadline)
            pages: list[DecodedImage] = []
            max_payload = 3 * self.limits.max_image_pixels
            while True:
                message, payload = worker.read_frame(deadline, max_payload)
                if "width" in message:
                    pages.append(_page(message, payload))
                elif "error" in message or "page_count" in message:
                    break
                else:
                    raise _WorkerFailed("protocol")
        except _WorkerFailed as failure:
            worker.kill()
            return {"error": failure.reason}, []
        self._return_worker(worker)
        return message, pages

    def _take_worker(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RouterError("the PDF renderer has been shut down")
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    return worker
                worker.kill()
        return self._start_worker()

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._memory_limit)
        try:
            worker.wait_ready(WORKER_START_TIMEOUT_S)
        except _WorkerFailed as e:
            worker.kill()
            message = "the PDF renderer could not start (is pypdfium2 installed?)"
            raise RouterError(message, code="pdf_unavailable") from e
        return worker

    def warm(self) -> None:
        """Start a worker now (blocks ~0.1-0.3 s), so that the first PDF does not wait for one."""
        with self._lock:
            if self._idle or self._closed:
                return
        self._return_worker(self._start_worker())

    def _return_worker(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (for diagnostics)."""
        with self._lock:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        """Stop the idle workers; a busy one stops when its PDF is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def _error(self, message: dict[str, Any], label: str, budget: MediaBudget, param: str | None) -> RouterError:
        kind = message["error"]
        limits = self.limits
        if kind == "images":
            budget.charge_images(int(message["page_count"]), label, param=param, dry_run=True)
        if kind == "pixels":
            budget.charge_pixels(int(message["pixels"]), label, param=param, dry_run=True)
        texts = {
            "password": ("is an encrypted PDF that needs a password; send it decrypted", "pdf_encrypted"),
            "pages": (
                f"has {message.get('page_count')} pages; the limit is {limits.max_pdf_pages} ({KEY}max_pdf_pages)",
                "pdf_too_many_pages",
            ),
            "timeout": (
                f"took more than {limits.pdf_timeout_s:g} s to render; the limit is {limits.pdf_timeout_s:g} s "
                f"({KEY}pdf_timeout_s)",
                "pdf_timeout",
            ),
            "crash": ("crashed the PDF renderer, so it is not a readable PDF", "invalid_pdf"),
            "memory": ("needs more memory to render than a PDF worker may use", "pdf_too_large"),
            "text": (f"has a text layer of more than {pdf_worker.MAX_TEXT_CHARS} characters", "pdf_too_large"),
        }
        if kind in texts:
            text, code = texts[kind]
            return InvalidRequestError(f"{label} {text}", param=param, code=code)
        detail = message.get("detail")
        reason = f" ({detail})" if isinstance(detail, str) and detail else ""
        return InvalidRequestError(f"{label} is not a readable PDF{reason}", param=param, code="invalid_pdf")
