"""Images and PDFs from a chat request's `image_url` and `file` parts, decoded under the limits of `server.media`.

Every input is untrusted. The order of checks is what keeps a hostile one cheap: the base64 length against the size
limit before decoding; the real type from the first bytes (the declared MIME type is not believed); an image's size
from its header against `max_image_pixels` before its pixels are decoded; a PDF's page count and page sizes before
rendering, in a child process (`pdf.py`). Only `data:` URIs are read; http(s) URLs only where the configuration allows
them (`remote.py`); paths and `file://` never. Every refusal is a 400 that names the limit and its config key.

The `decode_*` methods block (an image decodes in tens to hundreds of ms, a PDF renders up to `pdf_timeout_s`): on
the event loop, await the `*_async` ones, which run them on this decoder's own threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PIL import Image, ImageOps

from mlx_router.errors import InvalidRequestError
from mlx_router.vision.limits import KEY, MB, MediaBudget, MediaLimits, limit_mb, megabytes
from mlx_router.vision.media import DecodedImage, PdfDocument
from mlx_router.vision.pdf import PdfRenderer
from mlx_router.vision.remote import check_remote_url, fetch_remote

T = TypeVar("T")
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}
_DATA_URI = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)
_WHITE = (255, 255, 255)


def sniff(data: bytes) -> str | None:
    """The format of `data` from its first bytes: png, jpeg, gif, webp, bmp, pdf, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if b"%PDF-" in data[:1024]:  # PDF readers accept junk before the header
        return "pdf"
    return None


def _describe(data: bytes) -> str:
    head = data[:16]
    if head.isascii() and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"text starting {head.decode()!r}"
    return f"data starting {head[:8].hex(' ')}"


class MediaDecoder:
    """Decodes the media parts of requests under `limits`; holds the PDF workers and a few threads (`close`)."""

    def __init__(self, limits: MediaLimits, *, pdf_workers: int = 2, threads: int = 4) -> None:
        self.limits = limits
        self.pdf = PdfRenderer(limits, max_workers=pdf_workers)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="media")

    def new_budget(self) -> MediaBudget:
        """Running totals for one request: pass the same budget to every decode of that request."""
        return MediaBudget(self.limits)

    def close(self) -> None:
        """Stop the PDF workers and the threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.pdf.close()

    def decode_image_url(
        self,
        url: str,
        budget: MediaBudget,
        *,
        want_images: bool = True,
        want_text: bool = True,
        param: str | None = None,
    ) -> DecodedImage | PdfDocument:
        """An `image_url` part's URL: a data: URI of a PNG, JPEG, WebP, GIF (first frame) or BMP image, or of a
        PDF (then a PdfDocument with pages and/or text as asked); http(s) only where allowed."""
        label = budget.next_image_label()
        if not isinstance(url, str):
            raise InvalidRequestError(f"{label}: the URL must be a string", param=param, code="invalid_image_url")
        url = url.strip()
        scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
        if scheme == "data":
            mime, payload = self._split_data_uri(url, label, param)
            data = self._decode_base64(payload, label, budget, self._size_key(mime), param)
        elif scheme in ("http", "https"):
            checked = check_remote_url(url, self.limits, label, param)
            most = max(self.limits.max_pdf_mb, self.limits.max_image_mb) * MB
            data = fetch_remote(checked, self.limits, int(most), label, param)
        else:
            raise InvalidRequestError(
                f"{label} is not a data: URI; only data:image/...;base64 URIs are accepted (file paths and file:// "
                "URLs are never opened)",
                param=param,
                code="invalid_image_url",
            )
        kind = sniff(data)
        if kind == "pdf":
            self._charge(data, label, budget, "max_pdf_mb", param)
            return self.pdf.render(data, budget, label=label, want_images=want_images, want_text=want_text, param=param)
        if kind is None:
            raise InvalidRequestError(
                f"{label} is not a PNG, JPEG, WebP, GIF or BMP image, nor a PDF ({_describe(data)})",
                param=param,
                code="invalid_image_format",
            )
        self._charge(data, label, budget, "max_image_mb", param)
        return self._decode_image(data, kind, label, budget, param)

    def decode_file(
        self,
        file_data: str,
        filename: str | None,
        budget: MediaBudget,
        want_images: bool,
        want_text: bool,
        *,
        param: str | None = None,
    ) -> PdfDocument:
        """A `file` part's `file_data` (a data:application/pdf;base64 URI, or the bare base64): the PDF's pages
        as images (`want_images`) and its text layer (`want_text`)."""
        label = budget.next_file_label(filename)
        if not isinstance(file_data, str):
            raise InvalidRequestError(f"{label}: file_data must be a string", param=param, code="invalid_file")
        payload = file_data.strip()
        if payload[:5].lower() == "data:":
            payload = self._split_data_uri(payload, label, param)[1]
        data = self._decode_base64(payload, label, budget, "max_pdf_mb", param)
        kind = sniff(data)
        if kind != "pdf":
            what = f"a {kind.upper()} image" if kind else _describe(data)
            raise InvalidRequestError(
                f"{label} is not a PDF ({what}); file parts take PDFs, images go in image_url parts",
                param=param,
                code="unsupported_file_type",
            )
        self._charge(data, label, budget, "max_pdf_mb", param)
        return self.pdf.render(
            data, budget, label=label, want_images=want_images, want_text=want_text, filename=filename, param=param
        )

    async def decode_image_url_async(self, url: str, budget: MediaBudget, **kwargs: Any) -> DecodedImage | PdfDocument:
        """`decode_image_url` on this decoder's threads, so the event loop keeps serving."""
        return await self._in_thread(functools.partial(self.decode_image_url, url, budget, **kwargs))

    async def decode_file_async(
        self,
        file_data: str,
        filename: str | None,
        budget: MediaBudget,
        want_images: bool,
        want_text: bool,
        **kwargs: Any,
    ) -> PdfDocument:
        """`decode_file` on this decoder's threads, so the event loop keeps serving."""
        call = functools.partial(self.decode_file, file_data, filename, budget, want_images, want_text, **kwargs)
        return await self._in_thread(call)

    async def _in_thread(self, call: functools.partial[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @staticmethod
    def _split_data_uri(url: str, label: str, param: str | None) -> tuple[str, str]:
        """(MIME type, base64 text) of a data: URI; only base64 ones are accepted."""
        match = _DATA_URI.match(url[:512])  # the header only: never scan megabytes for a missing comma
        if match is None or "base64" not in [p.strip().lower() for p in match.group(2).split(";")]:
            raise InvalidRequestError(
                f"{label} is not a base64 data: URI (data:<type>;base64,<data>)", param=param, code="invalid_image_url"
            )
        return match.group(1).strip().lower(), url[match.end() :]

    def _size_key(self, mime: str) -> str:
        """The size limit a data: URI of this declared type is held to before decoding (the larger one when the
        type says neither; the real type's limit applies after decoding)."""
        if mime == "application/pdf":
            return "max_pdf_mb"
        if mime.startswith("image/"):
            return "max_image_mb"
        return "max_pdf_mb" if self.limits.max_pdf_mb > self.limits.max_image_mb else "max_image_mb"

    def _decode_base64(self, text: str, label: str, budget: MediaBudget, key: str, param: str | None) -> bytes:
        # Checked before decoding: a hostile size costs nothing but this arithmetic.
        estimate = len(text) * 3 // 4 - text[-2:].count("=")
        self._check_size(estimate, label, key, param)
        budget.charge_bytes(estimate, label, param=param, dry_run=True)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
        try:  # clients that wrap lines or drop the padding
            compact = "".join(text.split())
            return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{label} is not valid base64", param=param, code="invalid_base64") from None

    def _check_size(self, size: int, label: str, key: str, param: str | None) -> None:
        max_mb: float = getattr(self.limits, key)
        if size > max_mb * MB:
            what = "PDF" if key == "max_pdf_mb" else "image"
            raise InvalidRequestError(
                f"{label} is {megabytes(size)}; the limit is {limit_mb(max_mb)} per {what} ({KEY}{key})",
                param=param,
                code="pdf_too_large" if what == "PDF" else "image_too_large",
            )

    def _charge(self, data: bytes, label: str, budget: MediaBudget, key: str, param: str | None) -> None:
        self._check_size(len(data), label, key, param)
        budget.charge_bytes(len(data), label, param=param)

    def _decode_image(self, data: bytes, kind: str, label: str, budget: MediaBudget, param: str | None) -> DecodedImage:
        budget.charge_images(1, label, param=param, dry_run=True)
        limit = self.limits.max_image_pixels
        try:
            with Image.open(io.BytesIO(data), formats=[IMAGE_FORMATS[kind]]) as image:
                width, height = image.size  # from the header: nothing decoded yet
                if width * height > limit:
                    size = f"{width}x{height} ({width * height / 1e6:.1f} million)"
                    raise _too_many_pixels(label, size, limit, param)
                budget.charge_pixels(width * height, label, param=param, dry_run=True)
                image.load()
                rgb = _to_rgb(_upright(image))
        except Image.DecompressionBombError as e:  # Pillow's own guard, beyond twice its MAX_IMAGE_PIXELS
            found = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(found.group(1)) / 1e6:.0f} million" if found else "too many"
            raise _too_many_pixels(label, size, limit, param) from None
        except InvalidRequestError:
            raise
        except Exception as e:  # noqa: BLE001  (whatever a broken file makes Pillow raise, it is the file's fault)
            raise InvalidRequestError(
                f"{label} could not be decoded as {kind.upper()} ({type(e).__name__}: {e})",
                param=param,
                code="image_parse_error",
            ) from None
        budget.charge_images(1, label, param=param)
        budget.charge_pixels(rgb.width * rgb.height, label, param=param)
        return DecodedImage.from_pil(rgb)


def _too_many_pixels(label: str, size: str, limit: int, param: str | None) -> InvalidRequestError:
    return InvalidRequestError(
        f"{label} is {size} pixels; the limit is {limit / 1e6:g} million pixels ({KEY}max_image_pixels)",
        param=param,
        code="image_too_large",
    )


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; a broken EXIF block leaves it as stored."""
    try:
        turned = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001  (a photo with a garbled EXIF block is still a photo)
        return image
    return turned if turned is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparent pixels composited onto white (models were trained on opaque images)."""
    if image.mode.startswith("I"):  # 16- or 32-bit grey: scale to 8 bits, not clip
        image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image
