"""Decoded media as plain values: an image's RGB pixels with a digest of their content, a PDF's pages and text.

These are what the HTTP side hands the engine: no file handles, no PIL objects, nothing that refers back to the
client's bytes. The digest is of the pixels (and the size), not of the file: the same picture sent again, even
re-encoded losslessly (PNG, then lossless WebP), hits the engine's image-feature cache, and two different images
can never share an entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from PIL import Image


def pixel_digest(rgb: bytes, width: int, height: int) -> str:
    """sha256 (hex) of an image's size and RGB pixels: equal pixels, equal digest."""
    h = hashlib.sha256(f"rgb8:{width}x{height}:".encode())
    h.update(rgb)
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One image as 8-bit RGB pixels, row-major (`width * height * 3` bytes), and the digest of its content."""

    rgb: bytes = field(repr=False)
    width: int
    height: int
    digest: str

    @classmethod
    def from_rgb(cls, rgb: bytes, width: int, height: int) -> DecodedImage:
        """Wrap RGB pixels, computing their digest."""
        if len(rgb) != width * height * 3:
            raise ValueError(f"{len(rgb)} bytes are not {width}x{height} RGB pixels")
        return cls(rgb, width, height, pixel_digest(rgb, width, height))

    @classmethod
    def from_pil(cls, image: Image.Image) -> DecodedImage:
        """Take the pixels of a PIL image that is already in RGB mode."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}")
        return cls.from_rgb(image.tobytes(), image.width, image.height)

    def to_pil(self) -> Image.Image:
        """A PIL image of these pixels (a copy the caller owns)."""
        return Image.frombytes("RGB", (self.width, self.height), self.rgb)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def __eq__(self, other: object) -> bool:
        # The digest covers size and pixels; comparing it avoids comparing megabytes.
        return isinstance(other, DecodedImage) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@dataclass(frozen=True)
class PdfDocument:
    """A PDF as decoded for a model: each page rendered as an image (when images were asked for) and each page's
    text layer (when text was asked for; `texts[i]` is page i+1's text, without a marker). `page_count` is the
    document's number of pages either way."""

    pages: list[DecodedImage]
    texts: list[str]
    page_count: int
    filename: str | None = None

    def marked_text(self) -> str:
        """The text layer with a marker line before each page ("--- page 1 ---"), for a text-only model."""
        return "\n".join(f"--- page {i} ---\n{text.strip()}" for i, text in enumerate(self.texts, start=1))


def resize(image: DecodedImage, width: int, height: int) -> DecodedImage:
    """`image` resized to `width` x `height` (PIL bicubic), with the digest of the new pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    if (width, height) == (image.width, image.height):
        return image
    resized = image.to_pil().resize((width, height), Image.Resampling.BICUBIC)
    return DecodedImage.from_pil(resized)
