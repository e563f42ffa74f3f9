"""The PDF worker: a child process (`python -m mlx_router.vision.pdf_worker MEMORY_BYTES`) that opens PDFs with
pypdfium2, renders their pages and reads their text layers, so that a crash or hang inside PDFium costs one
request, never the server. `mlx_router.vision.pdf` starts and drives it.

Protocol, over the child's stdin and stdout: frames of a 12-byte header (JSON length, payload length; little
endian), a UTF-8 JSON object and a binary payload. The parent sends a job (the JSON says what to do, the payload
is the PDF); the child answers with one frame per rendered page (JSON: width, height; payload: RGB pixels) and a
last frame with `done` (page count, texts) or `error` (a kind and the numbers the parent's message needs). The
child never sends pickles: the parent must not trust what a process that parsed hostile data says.
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import sys
from typing import Any, BinaryIO

HEADER = struct.Struct("<IQ")
MAX_JSON_BYTES = 64 * 1024**2
MAX_TEXT_CHARS = 16_000_000  # a whole PDF's text layer; far beyond any model's context
POINTS_PER_INCH = 72.0


class ProtocolError(Exception):
    """A frame that breaks the protocol (short, oversized or not JSON)."""


def encode_frame(message: dict[str, Any], payload: bytes = b"", *, payload_len: int | None = None) -> bytes:
    """One frame: header, JSON, payload; with `payload_len`, only header and JSON (the caller writes the
    payload next)."""
    body = json.dumps(message).encode()
    size = len(payload) if payload_len is None else payload_len
    return HEADER.pack(len(body), size) + body + payload


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """The next frame from a blocking stream, or None at its end."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    json_len, payload_len = HEADER.unpack(header)
    if json_len > MAX_JSON_BYTES:
        raise ProtocolError(f"a {json_len}-byte header")
    body = _read_exact(stream, json_len)
    payload = _read_exact(stream, payload_len)
    if body is None or payload is None:
        raise ProtocolError("a truncated frame")
    return json.loads(body), payload


def page_scale(width_pt: float, height_pt: float, dpi: float, max_pixels: int) -> tuple[float, int, int]:
    """(scale, width px, height px) of a page rendered at `dpi`, or lower where that would pass `max_pixels`."""
    scale = dpi / POINTS_PER_INCH
    if math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
        scale = math.sqrt(max_pixels / (width_pt * height_pt)) * 0.999
    return scale, max(1, math.ceil(width_pt * scale)), max(1, math.ceil(height_pt * scale))


class JobError(Exception):
    """What is wrong with a PDF, as a kind the parent turns into a message, and its numbers."""

    def __init__(self, kind: str, **numbers: Any) -> None:
        super().__init__(kind)
        self.kind = kind
        self.numbers = numbers


def run_job(job: dict[str, Any], data: bytes, out: BinaryIO) -> None:
    """Open the PDF in `data`, check it against the job's limits, then send its pages and text."""
    import pypdfium2  # only this process loads PDFium

    try:
        document = pypdfium2.PdfDocument(data)  # bytes, never a path: a client's string is never opened
    except pypdfium2.PdfiumError as e:
        password = getattr(e, "err_code", None) == pypdfium2.raw.FPDF_ERR_PASSWORD
        raise JobError("password" if password else "invalid", detail=str(e)) from None
    try:
        _render(document, job, out)
    finally:
        document.close()


def _render(document: Any, job: dict[str, Any], out: BinaryIO) -> None:
    page_count = len(document)
    if page_count > job["max_pages"]:
        raise JobError("pages", page_count=page_count)
    if page_count == 0:
        raise JobError("invalid", detail="the document has no pages")
    sizes = []
    if job["want_images"]:
        if page_count > job["image_allowance"]:
            raise JobError("images", page_count=page_count)
        for index in range(page_count):
            width_pt, height_pt = document.get_page_size(index)
            if not (width_pt > 0 and height_pt > 0):
                raise JobError("invalid", detail=f"page {index + 1} has no area")
            sizes.append(page_scale(width_pt, height_pt, job["dpi"], job["max_pixels"]))
        total = sum(w * h for _, w, h in sizes)
        if total > job["pixel_allowance"]:
            raise JobError("pixels", page_count=page_count, pixels=total)
        document.init_forms()  # filled-in form fields are drawn as the reader sees them
    texts: list[str] = []
    chars = 0
    for index in range(page_count):
        page = document[index]
        try:
            if job["want_images"]:
                _send_page(page, sizes[index][0], job["max_pixels"], out)
            if job["want_text"]:
                textpage = page.get_textpage()
                text = textpage.get_text_range().replace("\r\n", "\n")
                textpage.close()
                chars += len(text)
                if chars > MAX_TEXT_CHARS:
                    raise JobError("text", chars=chars)
                texts.append(text)
        finally:
            page.close()
    out.write(encode_frame({"done": True, "page_count": page_count, "texts": texts}))
    out.flush()


def _send_page(page: Any, scale: float, max_pixels: int, out: BinaryIO) -> None:
    bitmap = page.render(scale=scale, rev_byteorder=True, fill_color=(255, 255, 255, 255), draw_annots=True)
    image = bitmap.to_pil()
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.width * image.height > max_pixels:
        raise JobError("invalid", detail=f"a page rendered at {image.width}x{image.height}")
    pixels = image.tobytes()
    out.write(encode_frame({"width": image.width, "height": image.height}, payload_len=len(pixels)))
    out.write(pixels)  # apart from the header: joining them would copy megabytes
    bitmap.close()


def _limit_memory(limit: int) -> None:
    # A hostile PDF may make PDFium allocate without bound; past this the job fails here, not the machine.
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not enforceable on this platform (macOS): the timeout and the process boundary still hold


def _alarm(seconds: int) -> None:
    if hasattr(signal, "alarm"):
        signal.alarm(seconds)  # SIGALRM's default action ends the process


def main(argv: list[str]) -> None:
    """Serve jobs from stdin until it closes."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print from a library must not corrupt the protocol
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    if argv:
        _limit_memory(int(argv[0]))
    import pypdfium2  # noqa: F401  (loaded before "ready", so the first job does not pay for it)

    replies.write(encode_frame({"ready": True}))
    replies.flush()
    while True:
        frame = read_frame(requests)
        if frame is None:
            return
        job, data = frame
        # The parent kills a worker that overruns; should the parent itself be gone, this ends the worker anyway.
        _alarm(math.ceil(float(job.get("timeout_s", 60))) + 10)
        try:
            run_job(job, data, replies)
        except JobError as e:
            replies.write(encode_frame({"error": e.kind, **e.numbers}))
        except MemoryError:
            replies.write(encode_frame({"error": "memory"}))
        except Exception as e:  # noqa: BLE001  (any failure on hostile data is that PDF's fault)
            replies.write(encode_frame({"error": "invalid", "detail": f"{type(e).__name__}: {e}"}))
        replies.flush()
        _alarm(0)


if __name__ == "__main__":
    main(sys.argv[1:])
