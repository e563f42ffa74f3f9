"""Image inputs as a client sends them: data URIs of every format, their limits, corrupt and mislabelled data,
decompression bombs, paths and remote URLs (with a listener that must see no connection unless allowed)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mlx_router.config.settings import ConfigError, ServerConfig, parse_settings
from mlx_router.errors import InvalidRequestError
from mlx_router.vision.inputs import MediaDecoder
from mlx_router.vision.limits import MediaLimits
from mlx_router.vision.media import DecodedImage, PdfDocument, resize
from tests.fixtures.pdfs import Page, build_pdf

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def solid(colour: tuple[int, ...], size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple) and len(value) == 3
    return (int(value[0]), int(value[1]), int(value[2]))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixel data is a few bytes of zeros (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def decoder() -> Iterator[MediaDecoder]:
    d = MediaDecoder(MediaLimits())
    yield d
    d.close()


def make_decoder(**limits: Any) -> MediaDecoder:
    return MediaDecoder(MediaLimits(**limits))


def refused(call: Any, *args: Any, **kwargs: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        call(*args, **kwargs)
    assert info.value.status == 400
    return info.value


# --- formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime", "kwargs"),
    [
        ("PNG", "image/png", {}),
        ("JPEG", "image/jpeg", {"quality": 95}),
        ("WEBP", "image/webp", {"lossless": True}),
        ("GIF", "image/gif", {}),
        ("BMP", "image/bmp", {}),
    ],
)
def test_every_format_decodes_to_its_pixels(decoder: MediaDecoder, fmt: str, mime: str, kwargs: dict) -> None:
    image = Image.new("RGB", (16, 8), RED)
    image.paste(BLUE, (8, 0, 16, 8))
    decoded = decoder.decode_image_url(data_uri(encode(image, fmt, **kwargs), mime), decoder.new_budget())
    assert isinstance(decoded, DecodedImage)
    assert (decoded.width, decoded.height) == (16, 8)
    assert len(decoded.rgb) == 16 * 8 * 3
    pil = decoded.to_pil()
    for xy, expected in (((2, 4), RED), ((13, 4), BLUE)):
        assert all(abs(a - b) <= 8 for a, b in zip(rgb_at(pil, xy), expected, strict=True)), (fmt, xy)


def test_gif_gives_its_first_frame(decoder: MediaDecoder) -> None:
    frames = [solid(RED), solid(BLUE)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(gif)), "n_frames", 1) == 2
    decoded = decoder.decode_image_url(data_uri(gif, "image/gif"), decoder.new_budget())
    assert isinstance(decoded, DecodedImage)
    assert decoded.to_pil().getpixel((0, 0)) == RED


def test_digest_is_of_pixels_not_file(decoder: MediaDecoder) -> None:
    budget = decoder.new_budget()
    png = decoder.decode_image_url(data_uri(encode(solid(RED), "PNG")), budget)
    bmp = decoder.decode_image_url(data_uri(encode(solid(RED), "BMP"), "image/bmp"), budget)
    other = decoder.decode_image_url(data_uri(encode(solid(BLUE), "PNG")), budget)
    assert isinstance(png, DecodedImage) and isinstance(bmp, DecodedImage) and isinstance(other, DecodedImage)
    assert png.digest == bmp.digest
    assert png.digest != other.digest
    assert png.digest == DecodedImage.from_rgb(png.rgb, png.width, png.height).digest


def test_alpha_is_composited_onto_white(decoder: MediaDecoder) -> None:
    image = Image.new("RGBA", (4, 1), (255, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    decoded = decoder.decode_image_url(data_uri(encode(image, "PNG")), decoder.new_budget())
    assert isinstance(decoded, DecodedImage)
    pil = decoded.to_pil()
    assert pil.getpixel((0, 0)) == WHITE
    assert pil.getpixel((1, 0)) == RED
    assert all(abs(v - 127) <= 2 for v in rgb_at(pil, (2, 0)))


def test_palette_transparency_and_grey_alpha_become_white(decoder: MediaDecoder) -> None:
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    gif = encode(palette, "GIF", transparency=0)
    la = encode(Image.new("LA", (2, 1), (0, 0)), "PNG")
    budget = decoder.new_budget()
    from_gif = decoder.decode_image_url(data_uri(gif, "image/gif"), budget)
    from_la = decoder.decode_image_url(data_uri(la), budget)
    assert isinstance(from_gif, DecodedImage) and isinstance(from_la, DecodedImage)
    assert from_gif.to_pil().getpixel((0, 0)) == WHITE
    assert from_gif.to_pil().getpixel((1, 0)) == RED
    assert from_la.to_pil().getpixel((0, 0)) == WHITE


def test_exif_orientation_is_applied(decoder: MediaDecoder) -> None:
    image = Image.new("RGB", (64, 32), RED)
    image.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown rotated 90 degrees clockwise
    jpeg = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decoder.decode_image_url(data_uri(jpeg, "image/jpeg"), decoder.new_budget())
    assert isinstance(decoded, DecodedImage)
    assert (decoded.width, decoded.height) == (32, 64)
    pil = decoded.to_pil()
    assert rgb_at(pil, (16, 8))[0] > 200 and rgb_at(pil, (16, 8))[2] < 50  # the left half is now on top
    assert rgb_at(pil, (16, 56))[2] > 200 and rgb_at(pil, (16, 56))[0] < 50


def test_sixteen_bit_grey_is_scaled_not_clipped(decoder: MediaDecoder) -> None:
    png = encode(Image.new("I;16", (2, 2), 40000), "PNG")
    decoded = decoder.decode_image_url(data_uri(png), decoder.new_budget())
    assert isinstance(decoded, DecodedImage)
    assert decoded.to_pil().getpixel((0, 0)) == (155, 155, 155)


def test_resize_is_bicubic_with_a_new_digest() -> None:
    source = Image.new("RGB", (20, 10), RED)
    source.paste(BLUE, (10, 0, 20, 10))
    image = DecodedImage.from_pil(source)
    small = resize(image, 10, 5)
    assert (small.width, small.height) == (10, 5)
    assert small.digest != image.digest
    assert small.rgb == source.resize((10, 5), Image.Resampling.BICUBIC).tobytes()
    assert resize(image, 20, 10) is image


# --- types and encodings ---------------------------------------------------------------------------------------


def test_declared_type_is_not_believed(decoder: MediaDecoder) -> None:
    budget = decoder.new_budget()
    decoded = decoder.decode_image_url(data_uri(encode(solid(RED), "PNG"), "image/jpeg"), budget)
    assert isinstance(decoded, DecodedImage)
    error = refused(decoder.decode_image_url, data_uri(b"just some text, not an image", "image/png"), budget)
    assert error.code == "invalid_image_format"
    assert "image 2" in error.message and "just some text" in error.message


NOISE = Image.effect_noise((64, 64), 64).convert("RGB")


@pytest.mark.parametrize(
    "data",
    [
        encode(NOISE, "PNG")[:2000],  # truncated in the pixel data
        encode(NOISE, "JPEG")[:500],
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        b"\xff\xd8\xff" + b"garbage" * 10,
        b"GIF89a" + b"\xff" * 20,
        b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20,
        b"BM" + b"\0" * 40,
    ],
    ids=["truncated-png", "truncated-jpeg", "png", "jpeg", "gif", "webp", "bmp"],
)
def test_corrupt_images_are_400s(decoder: MediaDecoder, data: bytes) -> None:
    error = refused(decoder.decode_image_url, data_uri(data), decoder.new_budget())
    assert error.code == "image_parse_error"


def test_base64_forms(decoder: MediaDecoder) -> None:
    png = encode(solid(RED), "PNG")
    text = base64.b64encode(png).decode()
    budget = decoder.new_budget()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    for uri in (
        f"data:image/png;base64,{wrapped}",
        f"data:image/png;base64,{text.rstrip('=')}",
        f"  DATA:;base64,{text}",
    ):
        assert isinstance(decoder.decode_image_url(uri, budget), DecodedImage)
    assert refused(decoder.decode_image_url, "data:image/png;base64,@@@notbase64@@@", budget).code == "invalid_base64"
    assert refused(decoder.decode_image_url, "data:image/png,%89PNG", budget).code == "invalid_image_url"
    no_comma = "data:image/png;base64" + "A" * 1_000_000
    assert refused(decoder.decode_image_url, no_comma, budget).code == "invalid_image_url"


# --- limits ----------------------------------------------------------------------------------------------------


def test_image_bytes_are_refused_from_the_base64_length_before_decoding() -> None:
    decoder = make_decoder(max_image_mb=0.01)
    # Not base64 at all: a decoder that decoded first would say so; the size check comes first.
    error = refused(decoder.decode_image_url, "data:image/png;base64," + "!" * 40_000, decoder.new_budget())
    assert error.code == "image_too_large"
    assert error.message == "image 1 is 0.0 MB; the limit is 0.01 MB per image (server.media.max_image_mb)"
    big = data_uri(encode(Image.effect_noise((80, 80), 64).convert("RGB"), "PNG"))
    assert "server.media.max_image_mb" in refused(decoder.decode_image_url, big, decoder.new_budget()).message


def test_request_media_bytes_add_up() -> None:
    png = encode(Image.effect_noise((100, 100), 64).convert("RGB"), "PNG")
    decoder = make_decoder(max_request_media_mb=2.5 * len(png) / 1024**2)
    budget = decoder.new_budget()
    decoder.decode_image_url(data_uri(png), budget)
    decoder.decode_image_url(data_uri(png), budget)
    error = refused(decoder.decode_image_url, data_uri(png), budget)
    assert error.code == "media_too_large"
    assert error.message.startswith("image 3 brings this request's media to ")
    assert "(server.media.max_request_media_mb)" in error.message
    assert isinstance(decoder.decode_image_url(data_uri(png), decoder.new_budget()), DecodedImage)


def test_image_count_is_limited_per_request() -> None:
    decoder = make_decoder(max_images=2)
    budget = decoder.new_budget()
    uri = data_uri(encode(solid(RED), "PNG"))
    decoder.decode_image_url(uri, budget)
    decoder.decode_image_url(uri, budget)
    error = refused(decoder.decode_image_url, uri, budget)
    assert error.code == "too_many_images"
    assert error.message == (
        "image 3 is image 3 of this request; the limit is 2 images per request (server.media.max_images)"
    )


def test_pixels_are_refused_from_the_header() -> None:
    decoder = make_decoder(max_image_pixels=50_000)
    error = refused(decoder.decode_image_url, data_uri(encode(solid(RED, (300, 300)), "PNG")), decoder.new_budget())
    assert error.code == "image_too_large"
    assert error.message == (
        "image 1 is 300x300 (0.1 million) pixels; the limit is 0.05 million pixels (server.media.max_image_pixels)"
    )
    # The header is enough: a file whose pixel data is garbage is refused for its size, not for the garbage.
    header_only = png_header_only(1000, 1000)
    assert refused(decoder.decode_image_url, data_uri(header_only), decoder.new_budget()).code == "image_too_large"


@pytest.mark.parametrize("side", [8_000, 100_000])
def test_decompression_bomb_is_refused_fast(side: int) -> None:
    """8000^2 passes Pillow's own guard and meets ours; 100000^2 meets Pillow's first: both are our 400."""
    decoder = make_decoder()
    bomb = data_uri(png_header_only(side, side))
    start = time.perf_counter()
    error = refused(decoder.decode_image_url, bomb, decoder.new_budget())
    assert time.perf_counter() - start < 1.0
    assert error.code == "image_too_large"
    assert "server.media.max_image_pixels" in error.message
    assert "the limit is 40 million pixels" in error.message


def test_request_pixels_add_up() -> None:
    decoder = make_decoder(max_request_pixels=100_000)
    budget = decoder.new_budget()
    uri = data_uri(encode(solid(RED, (200, 200)), "PNG"))
    decoder.decode_image_url(uri, budget)
    decoder.decode_image_url(uri, budget)
    error = refused(decoder.decode_image_url, uri, budget)
    assert error.code == "media_too_large"
    assert "(server.media.max_request_pixels)" in error.message
    assert budget.pixels == 80_000 and budget.images == 2


# --- what is never read or fetched -----------------------------------------------------------------------------


class CountingServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that counts the connections it accepts."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connections = 0

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve(handler: type[BaseHTTPRequestHandler]) -> CountingServer:
    server = CountingServer(handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class ImageHandler(BaseHTTPRequestHandler):
    body = encode(solid(RED), "PNG")

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/redirect-away"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?to=", 1)[1])
            self.end_headers()
            return
        if self.path.startswith("/redirect-here"):
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
            return
        if self.path.startswith("/slow"):
            time.sleep(3)
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"4000\r\n" + b"\0" * 0x4000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[CountingServer]:
    server = serve(ImageHandler)
    yield server
    server.shutdown()
    server.server_close()


def test_remote_urls_are_refused_by_default_without_a_connection(
    decoder: MediaDecoder, listener: CountingServer
) -> None:
    for url in (f"{listener.url}/image.png", f"{listener.url.replace('http', 'https')}/image.png"):
        error = refused(decoder.decode_image_url, url, decoder.new_budget())
        assert error.code == "remote_url_disabled"
        assert "server.media.allow_remote_urls is false" in error.message
    allowed_but_not_listed = make_decoder(allow_remote_urls=True, remote_hosts=["example.com"])
    error = refused(allowed_but_not_listed.decode_image_url, f"{listener.url}/image.png", decoder.new_budget())
    assert error.code == "remote_host_not_allowed" and "server.media.remote_hosts" in error.message
    wrong_port = make_decoder(allow_remote_urls=True, remote_hosts=["127.0.0.1:1"])
    assert refused(wrong_port.decode_image_url, f"{listener.url}/x", decoder.new_budget()).code == (
        "remote_host_not_allowed"
    )
    assert listener.connections == 0


def test_paths_and_other_schemes_are_never_opened(decoder: MediaDecoder, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(encode(solid(RED), "PNG"))  # a readable image: opening it would succeed
    for url in (str(image), f"file://{image}", f"FILE://{image}", "image.png", "ftp://127.0.0.1/x.png", "C:\\x.png"):
        error = refused(decoder.decode_image_url, url, decoder.new_budget())
        assert error.code == "invalid_image_url", url
        assert "never opened" in error.message


def test_allowed_hosts_are_fetched_with_limits(listener: CountingServer) -> None:
    decoder = make_decoder(allow_remote_urls=True, remote_hosts=["127.0.0.1"], remote_timeout_s=1.0)
    fetched = decoder.decode_image_url(f"{listener.url}/image.png", decoder.new_budget())
    assert isinstance(fetched, DecodedImage) and fetched.to_pil().getpixel((0, 0)) == RED
    assert listener.connections == 1
    redirected = decoder.decode_image_url(f"{listener.url}/redirect-here", decoder.new_budget())
    assert isinstance(redirected, DecodedImage)
    error = refused(decoder.decode_image_url, f"{listener.url}/slow", decoder.new_budget())
    assert "server.media.remote_timeout_s" in error.message
    small = make_decoder(allow_remote_urls=True, remote_hosts=["127.0.0.1"], remote_max_mb=0.5)
    error = refused(small.decode_image_url, f"{listener.url}/chunked", small.new_budget())
    assert error.code == "image_too_large" and "server.media.remote_max_mb" in error.message


def test_redirects_to_other_hosts_are_not_followed(listener: CountingServer) -> None:
    other = serve(ImageHandler)
    try:
        decoder = make_decoder(allow_remote_urls=True, remote_hosts=["127.0.0.1", "localhost"])
        away = f"http://localhost:{other.server_address[1]}/image.png"
        error = refused(decoder.decode_image_url, f"{listener.url}/redirect-away?to={away}", decoder.new_budget())
        assert error.code == "remote_fetch_failed" and "another host" in error.message
        assert other.connections == 0
    finally:
        other.shutdown()
        other.server_close()


def test_remote_hosts_must_be_host_names() -> None:
    with pytest.raises(ValueError, match="not a host name"):
        MediaLimits(remote_hosts=["http://example.com/"])
    assert MediaLimits(remote_hosts=["Example.COM:8080", "[::1]"]).remote_hosts == ["example.com:8080", "[::1]"]


# --- PDFs and files through these entry points -----------------------------------------------------------------


def test_pdf_in_image_url_and_file_parts(decoder: MediaDecoder) -> None:
    pdf = build_pdf([Page(["Hello"])])
    budget = decoder.new_budget()
    doc = decoder.decode_image_url(data_uri(pdf, "application/pdf"), budget, want_images=False)
    assert isinstance(doc, PdfDocument) and doc.texts == ["Hello"] and doc.pages == []
    raw = decoder.decode_file(base64.b64encode(pdf).decode(), "a.pdf", budget, want_images=False, want_text=True)
    assert raw.texts == ["Hello"] and raw.filename == "a.pdf"
    png = data_uri(encode(solid(RED), "PNG"))
    error = refused(decoder.decode_file, png, "picture.png", budget, True, True)
    assert error.code == "unsupported_file_type"
    assert error.message.startswith("file 2 (picture.png) is not a PDF (a PNG image)")


def test_async_entry_points_leave_the_loop_free(decoder: MediaDecoder) -> None:
    big = data_uri(encode(Image.effect_noise((800, 800), 64).convert("RGB"), "PNG"))

    async def main() -> tuple[int, DecodedImage | PdfDocument]:
        ticks = 0
        done = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        result = await decoder.decode_image_url_async(big, decoder.new_budget())
        done.set()
        await ticker
        return ticks, result

    ticks, result = asyncio.run(main())
    assert isinstance(result, DecodedImage) and result.width == 800
    assert ticks > 3


# --- configuration ---------------------------------------------------------------------------------------------


def test_limits_come_from_server_media(caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_settings({"server": {"media": {"max_images": 3, "allow_remote_urls": True, "max_imgs": 1}}})
    assert settings.server.media.max_images == 3 and settings.server.media.allow_remote_urls
    assert settings.server.media.pdf_dpi == 150
    assert settings.unknown_keys() == ["server.media.max_imgs"]
    with pytest.raises(ConfigError, match=r"server\.media\.max_images"):
        parse_settings({"server": {"media": {"max_images": -1}}})
    with caplog.at_level(logging.WARNING):
        parse_settings({"server": {"media": {"max_imgs": 1}}})
    assert "server.media.max_imgs" in caplog.text


def test_config_json_documents_every_media_key() -> None:
    data = json.loads((Path(__file__).parents[2] / "config.json").read_text())
    media = data["server"]["media"]
    assert set(MediaLimits.model_fields) == set(media) - {"_help"} == set(media["_help"])
    for key, field in MediaLimits.model_fields.items():
        assert media[key] == field.get_default(call_default_factory=True), key
    assert "media" in data["server"]["_help"] and "media" in ServerConfig.model_fields
