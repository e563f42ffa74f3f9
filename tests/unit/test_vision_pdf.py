"""PDFs through the worker processes: pages rendered at the configured dpi, text with page markers, every limit,
encrypted and corrupt files, huge pages scaled down, a timeout and a crash that cost one PDF and not the server."""

from __future__ import annotations

import asyncio
import base64
import sys
import threading
import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import psutil
import pytest
from PIL import Image

from mlx_router.errors import InvalidRequestError
from mlx_router.vision.inputs import MediaDecoder
from mlx_router.vision.limits import MediaLimits
from mlx_router.vision.media import PdfDocument
from tests.fixtures.pdfs import Page, Rect, build_pdf

RED = (255, 0, 0)
WHITE = (255, 255, 255)
TWO_PAGES = build_pdf(
    [Page(["Hello world", "second line"], rects=[Rect(0, 0, 72, 72)]), Page(["Page two"], width=300, height=200)]
)


def pdf_uri(pdf: bytes) -> str:
    return "data:application/pdf;base64," + base64.b64encode(pdf).decode()


@cache
def slow_pdf() -> bytes:
    """Pages of 500,000 one-point squares each: ~1 s per page for PDFium to read and draw."""
    ops = b"\n".join(b"%d %d 1 1 re f" % (i % 600, (i // 600) % 790) for i in range(500_000))
    return build_pdf([Page(extra_content=ops)] * 4, compress=True)


@pytest.fixture(scope="module")
def decoder() -> Iterator[MediaDecoder]:
    d = MediaDecoder(MediaLimits())
    yield d
    d.close()


def decode(decoder: MediaDecoder, pdf: bytes, want_images: bool = True, want_text: bool = True, **kw: Any) -> Any:
    return decoder.decode_file(pdf_uri(pdf), "doc.pdf", decoder.new_budget(), want_images, want_text, **kw)


def refused(decoder: MediaDecoder, pdf: bytes, **kwargs: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        decode(decoder, pdf, **kwargs)
    assert info.value.status == 400
    return info.value


def workers() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "mlx_router.vision.pdf_worker" in " ".join(p.cmdline())
    }


def test_pages_render_at_the_configured_dpi(decoder: MediaDecoder) -> None:
    doc = decode(decoder, TWO_PAGES)
    assert isinstance(doc, PdfDocument) and doc.page_count == 2 and doc.filename == "doc.pdf"
    first, second = doc.pages
    assert (first.width, first.height) in ((1275, 1650), (1275, 1651))  # 8.5 x 11 in at 150 dpi
    assert (second.width, second.height) in ((625, 417), (625, 416))
    pil = first.to_pil()
    assert pil.getpixel((75, first.height - 75)) == RED  # the square at the lower left, one inch wide
    assert pil.getpixel((160, first.height - 75)) == WHITE
    assert pil.getpixel((first.width - 5, 5)) == WHITE
    assert first.digest != second.digest


def test_text_layer_per_page_with_markers(decoder: MediaDecoder) -> None:
    doc = decode(decoder, TWO_PAGES, want_images=False)
    assert doc.pages == [] and doc.page_count == 2
    assert doc.texts == ["Hello world\nsecond line", "Page two"]
    assert doc.marked_text() == "--- page 1 ---\nHello world\nsecond line\n--- page 2 ---\nPage two"
    assert decode(decoder, TWO_PAGES, want_text=False).texts == []


def test_rendered_pages_count_as_images_and_text_does_not() -> None:
    decoder = MediaDecoder(MediaLimits(max_images=2))
    try:
        budget = decoder.new_budget()
        decoder.decode_file(pdf_uri(TWO_PAGES), None, budget, True, False)
        assert budget.images == 2 and budget.pixels > 2_000_000
        with pytest.raises(InvalidRequestError) as info:
            decoder.decode_file(pdf_uri(TWO_PAGES), "b.pdf", budget, True, False)
        assert info.value.code == "too_many_images"
        assert info.value.message == (
            "file 2 (b.pdf) has 2 pages to render beside 2 other images; the limit is 2 images per request "
            "(server.media.max_images)"
        )
        text_only = decoder.decode_file(pdf_uri(TWO_PAGES), "b.pdf", budget, False, True)
        assert text_only.texts[1] == "Page two" and budget.images == 2
    finally:
        decoder.close()


def test_page_count_is_limited_before_rendering() -> None:
    decoder = MediaDecoder(MediaLimits(max_pdf_pages=3))
    try:
        error = refused(decoder, build_pdf([Page(["x"])] * 4), want_images=False)
        assert error.code == "pdf_too_many_pages"
        assert error.message == "file 1 (doc.pdf) has 4 pages; the limit is 3 (server.media.max_pdf_pages)"
        assert decode(decoder, build_pdf([Page(["x"])] * 3)).page_count == 3
    finally:
        decoder.close()


def test_a_huge_page_is_scaled_down_not_garbage(decoder: MediaDecoder) -> None:
    # 200 x 200 inches (PDF's largest page): 30,000 x 30,000 pixels at 150 dpi, 22 times the pixel limit.
    huge = build_pdf([Page(width=14400, height=14400, rects=[Rect(0, 0, 7200, 7200)])])
    (page,) = decode(decoder, huge).pages
    assert page.width * page.height <= 40_000_000
    assert page.width == page.height and page.width > 6000
    pil = page.to_pil()
    assert pil.getpixel((page.width // 4, page.height * 3 // 4)) == RED  # the lower left quarter is red
    assert pil.getpixel((page.width * 3 // 4, page.height // 4)) == WHITE


def test_request_pixels_count_rendered_pages() -> None:
    decoder = MediaDecoder(MediaLimits(max_request_pixels=2_000_000))
    try:
        error = refused(decoder, TWO_PAGES)
        assert error.code == "media_too_large" and "(server.media.max_request_pixels)" in error.message
        assert decode(decoder, TWO_PAGES, want_images=False).texts  # text costs no pixels
    finally:
        decoder.close()


def test_encrypted_pdf_is_a_400(decoder: MediaDecoder) -> None:
    locked = build_pdf([Page(["Secret"])], user_password="hunter2")
    import pypdfium2  # the fixture is a real encrypted PDF: it opens with its password

    assert pypdfium2.PdfDocument(locked, password="hunter2")[0].get_textpage().get_text_range() == "Secret"
    error = refused(decoder, locked)
    assert error.code == "pdf_encrypted"
    assert error.message == "file 1 (doc.pdf) is an encrypted PDF that needs a password; send it decrypted"
    # Encrypted with an empty user password (restrictions only): every reader opens it, and so do we.
    assert decode(decoder, build_pdf([Page(["Open"])], user_password="")).texts == ["Open"]


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.7\n" + b"\x00garbage" * 50, b"%PDF-1.4\n%%EOF\n", build_pdf([])],
    ids=["garbage", "empty", "no-pages"],
)
def test_corrupt_pdfs_are_400s(decoder: MediaDecoder, data: bytes) -> None:
    error = refused(decoder, data)
    assert error.code == "invalid_pdf" and "is not a readable PDF" in error.message


def test_non_pdfs_and_sizes(decoder: MediaDecoder) -> None:
    assert refused(decoder, b"plain text").code == "unsupported_file_type"
    small = MediaDecoder(MediaLimits(max_pdf_mb=0.001))
    try:
        error = refused(small, TWO_PAGES)
        assert error.code == "pdf_too_large"
        assert error.message.endswith("; the limit is 0.001 MB per PDF (server.media.max_pdf_mb)")
    finally:
        small.close()


def test_workers_persist_between_pdfs_and_have_a_memory_cap() -> None:
    decoder = MediaDecoder(MediaLimits())
    try:
        assert decoder.pdf.worker_pids() == []  # started on first use, or by warm()
        decoder.pdf.warm()
        first = decoder.pdf.worker_pids()
        assert len(first) == 1
        for _ in range(2):
            decode(decoder, TWO_PAGES, want_images=False)
            assert decoder.pdf.worker_pids() == first
        if sys.platform == "linux":
            limits = open(f"/proc/{first[0]}/limits").read()
            line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
            assert line.split()[3] == str(1024**3 + 8 * 40_000_000)
    finally:
        decoder.close()
    assert not psutil.pid_exists(first[0]) or psutil.Process(first[0]).status() == psutil.STATUS_ZOMBIE


def test_a_timeout_kills_the_worker_and_the_next_pdf_works() -> None:
    decoder = MediaDecoder(MediaLimits(pdf_timeout_s=0.5))
    try:
        decode(decoder, TWO_PAGES, want_images=False)  # a ready worker: the timeout is the PDF's own
        (pid,) = decoder.pdf.worker_pids()
        pdf = slow_pdf()
        start = time.monotonic()
        error = refused(decoder, pdf)
        assert time.monotonic() - start < 2.0
        assert error.code == "pdf_timeout"
        assert error.message == (
            "file 1 (doc.pdf) took more than 0.5 s to render; the limit is 0.5 s (server.media.pdf_timeout_s)"
        )
        assert not psutil.pid_exists(pid)
        assert decode(decoder, TWO_PAGES, want_images=False).texts[1] == "Page two"
    finally:
        decoder.close()


def test_a_crashed_worker_costs_one_pdf() -> None:
    decoder = MediaDecoder(MediaLimits())
    pdf = slow_pdf()
    try:
        before = workers()
        outcome: dict[str, Any] = {}

        def render() -> None:
            try:
                decode(decoder, pdf)
            except InvalidRequestError as e:
                outcome["error"] = e

        thread = threading.Thread(target=render)
        thread.start()
        deadline = time.monotonic() + 10
        while not (workers() - before) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # inside PDFium by now
        (pid,) = workers() - before
        psutil.Process(pid).kill()
        thread.join(10)
        assert outcome["error"].code == "invalid_pdf"
        assert "crashed the PDF renderer" in outcome["error"].message
        assert decode(decoder, TWO_PAGES, want_images=False).page_count == 2
    finally:
        decoder.close()


def test_async_rendering_leaves_the_loop_free(decoder: MediaDecoder) -> None:
    async def main() -> tuple[int, PdfDocument]:
        ticks = 0
        done = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        budget = decoder.new_budget()
        doc = await decoder.decode_file_async(pdf_uri(TWO_PAGES), "a.pdf", budget, True, True)
        done.set()
        await ticker
        return ticks, doc

    ticks, doc = asyncio.run(main())
    assert len(doc.pages) == 2 and ticks > 3


def test_pdfs_render_side_by_side(decoder: MediaDecoder) -> None:
    results: list[PdfDocument] = []
    threads = [threading.Thread(target=lambda: results.append(decode(decoder, TWO_PAGES))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3
    assert all(r.pages[0].digest == results[0].pages[0].digest for r in results)
    assert isinstance(results[0].pages[0].to_pil(), Image.Image)
