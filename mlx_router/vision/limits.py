"""Limits on the media a request may carry (`server.media` in config.json), and one request's running totals.

Every limit refused is a 400 whose message names the limit and its config key, so a user who meets one knows what
to change. Sizes in MB are MiB (2^20 bytes), as `server.max_body_mb` is.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlx_router.errors import InvalidRequestError

MB = 1024**2
KEY = "server.media."


class MediaLimits(BaseModel):
    """`server.media`: what images and PDFs a request may bring, and whether remote URLs are fetched."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    max_image_mb: float = Field(
        16.0,
        gt=0,
        description="MB of one image file, after base64 decoding (checked from the base64 length before decoding).",
    )
    max_pdf_mb: float = Field(32.0, gt=0, description="MB of one PDF file, after base64 decoding.")
    max_request_media_mb: float = Field(64.0, gt=0, description="MB of all images and PDFs of one request.")
    max_image_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Pixels of one image, read from its header before decoding (decompression bombs); a PDF page "
        "larger than this at pdf_dpi is rendered at a lower resolution instead.",
    )
    max_request_pixels: int = Field(
        100_000_000,
        gt=0,
        description="Pixels of all images of one request, decoded or rendered (each pixel takes 3 bytes of memory).",
    )
    max_images: int = Field(32, ge=0, description="Images per request; each rendered PDF page counts as one.")
    max_pdf_pages: int = Field(100, gt=0, description="Pages of one PDF.")
    pdf_dpi: float = Field(
        150.0, gt=0, le=600, description="Resolution (dpi) PDF pages are rendered at for vision models."
    )
    pdf_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds to open, render and read one PDF (in a worker process; past this the worker is "
        "killed and the request gets a 400).",
    )
    allow_remote_urls: bool = Field(
        False,
        description="Fetch http(s) image URLs from the hosts in remote_hosts; false: only data: URIs (file paths "
        "and file:// URLs are never opened either way).",
    )
    remote_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or host:port) that remote image URLs may name when allow_remote_urls is true.",
    )
    remote_max_mb: float = Field(16.0, gt=0, description="MB fetched from one remote URL.")
    remote_timeout_s: float = Field(10.0, gt=0, description="Seconds one remote fetch may take in all.")

    @field_validator("remote_hosts")
    @classmethod
    def _host_entries(cls, v: list[str]) -> list[str]:
        entries = [h.strip().lower() for h in v if h.strip()]
        for entry in entries:
            split_host_entry(entry)
        return entries

    def unknown_keys(self) -> list[str]:
        """Keys this section does not know; keys starting with '_' are comments and not reported."""
        return sorted(k for k in (self.model_extra or {}) if not k.startswith("_"))


def split_host_entry(entry: str) -> tuple[str, int | None]:
    """A `remote_hosts` entry as (host, port or None): 'example.com', 'example.com:8080', '[::1]:8080'."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        name, port = entry, ""
    if not name or "/" in name or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{entry!r} is not a host name or host:port")
    return name, int(port) if port else None


def megabytes(n: float) -> str:
    """A byte count as users read it in an error message: '31.2 MB'."""
    return f"{n / MB:.1f} MB"


def limit_mb(limit: float) -> str:
    return f"{limit:g} MB"


class MediaBudget:
    """One request's media so far: bytes, images, and how many image and file parts were seen (for messages
    like "image 2 ..."). Decode a request's parts in order for stable numbering; the totals are thread-safe."""

    def __init__(self, limits: MediaLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.images = 0
        self.pixels = 0
        self._image_parts = 0
        self._file_parts = 0
        self._lock = threading.Lock()

    def next_image_label(self) -> str:
        """The name of the next `image_url` part: 'image 1', 'image 2', ..."""
        with self._lock:
            self._image_parts += 1
            return f"image {self._image_parts}"

    def next_file_label(self, filename: str | None) -> str:
        """The name of the next `file` part: 'file 1 (report.pdf)'."""
        with self._lock:
            self._file_parts += 1
            n = self._file_parts
        if not filename:
            return f"file {n}"
        return f"file {n} ({filename[:80]}{'...' if len(filename) > 80 else ''})"

    def charge_bytes(self, n: int, label: str, *, param: str | None = None, dry_run: bool = False) -> None:
        """Add `n` bytes of media to the request, or refuse past `max_request_media_mb`; `dry_run` checks only."""
        limit = self.limits.max_request_media_mb
        with self._lock:
            total = self.bytes + n
            if total <= limit * MB:
                if not dry_run:
                    self.bytes = total
                return
        raise InvalidRequestError(
            f"{label} brings this request's media to {megabytes(total)}; the limit is {limit_mb(limit)} "
            f"({KEY}max_request_media_mb)",
            param=param,
            code="media_too_large",
        )

    def charge_images(self, n: int, label: str, *, param: str | None = None, dry_run: bool = False) -> None:
        """Count `n` more images (a rendered PDF's pages count one each), or refuse past `max_images`;
        `dry_run` checks without counting (before the work that makes the images)."""
        limit = self.limits.max_images
        with self._lock:
            before = self.images
            if before + n <= limit:
                if not dry_run:
                    self.images = before + n
                return
        if n == 1:
            what = f"{label} is image {before + 1} of this request"
        else:
            what = f"{label} has {n} pages to render" + (f" beside {before} other images" if before else "")
        raise InvalidRequestError(
            f"{what}; the limit is {limit} images per request ({KEY}max_images)", param=param, code="too_many_images"
        )

    def charge_pixels(self, n: int, label: str, *, param: str | None = None, dry_run: bool = False) -> None:
        """Count `n` more decoded pixels, or refuse past `max_request_pixels`; `dry_run` checks only."""
        limit = self.limits.max_request_pixels
        with self._lock:
            before = self.pixels
            if before + n <= limit:
                if not dry_run:
                    self.pixels = before + n
                return
        already = f" beside {before / 1e6:.1f} million already in this request" if before else ""
        raise InvalidRequestError(
            f"{label} is {n / 1e6:.1f} million pixels{already}; the limit is {limit / 1e6:g} million pixels per "
            f"request ({KEY}max_request_pixels)",
            param=param,
            code="media_too_large",
        )
