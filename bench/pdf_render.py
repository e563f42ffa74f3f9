"""What a PDF costs: pypdfium2's render and text time per page, the same through mlx-router's worker process,
and the start of a worker (what a process per PDF would pay every time).

usage: PYTHONPATH=. python bench/pdf_render.py [--pages 10] [--repeats 5] [--dpi 150]
The document is made here: US-letter pages of 48 lines of 11-point text and a filled rectangle (a typical
text page). Each figure is the minimum and the median over the repeats, so a busy machine shows as a spread.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from mlx_router.vision.limits import MediaBudget, MediaLimits
from mlx_router.vision.pdf import PdfRenderer
from tests.fixtures.pdfs import Page, Rect, build_pdf


def timed(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def line(label: str, seconds: tuple[float, float], per: int = 1) -> None:
    low, mid = (1e3 * s / per for s in seconds)
    print(f"{label:<58} min {low:7.1f} ms   median {mid:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dpi", type=float, default=150.0)
    args = parser.parse_args()
    import pypdfium2

    text = [f"Line {i}: the quick brown fox jumps over the lazy dog 0123456789" for i in range(48)]
    page = Page(text, font_size=11, rects=[Rect(50, 50, 200, 100, (0.2, 0.4, 0.8))])
    pdf = build_pdf([page] * args.pages, compress=True)
    n, scale = args.pages, args.dpi / 72
    document = pypdfium2.PdfDocument(pdf)

    def render_in_process() -> None:
        for p in document:
            p.render(scale=scale, rev_byteorder=True, fill_color=(255, 255, 255, 255)).to_pil().tobytes()

    def text_in_process() -> None:
        for p in document:
            p.get_textpage().get_text_range()

    print(f"{n} US-letter text pages at {args.dpi:g} dpi; pypdfium2 {pypdfium2.version.PYPDFIUM_INFO}")
    line("pypdfium2 in process: render a page (RGB bytes)", timed(render_in_process, args.repeats), n)
    line("pypdfium2 in process: text of a page", timed(text_in_process, args.repeats), n)

    limits = MediaLimits(pdf_dpi=args.dpi)
    renderer = PdfRenderer(limits)

    def through_worker(images: bool, text: bool) -> Callable[[], object]:
        def run() -> object:
            return renderer.render(pdf, MediaBudget(limits), label="bench", want_images=images, want_text=text)

        return run

    through_worker(False, True)()  # start the worker
    line("worker: a page as image and text (with transfer, digest)", timed(through_worker(True, True), args.repeats), n)
    line("worker: a page's text only", timed(through_worker(False, True), args.repeats), n)
    single = build_pdf([page], compress=True)
    line(
        "worker: a whole 1-page PDF, images and text",
        timed(lambda: renderer.render(single, MediaBudget(limits), label="b", want_images=True, want_text=True), 5),
    )
    renderer.close()

    def fresh_worker() -> None:
        one = PdfRenderer(limits)
        one.render(single, MediaBudget(limits), label="b", want_images=True, want_text=True)
        one.close()

    line("a fresh worker per PDF: the same 1-page PDF", timed(fresh_worker, args.repeats))
    start_python = [sys.executable, "-c", "import pypdfium2"]
    line("start of a Python process that imports pypdfium2", timed(lambda: subprocess.run(start_python), 5))


if __name__ == "__main__":
    main()
