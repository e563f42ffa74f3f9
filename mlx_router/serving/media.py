"""A chat's images and PDFs, made ready for one model before anything is generated.

Every image and file part is decoded (`vision/inputs.py`, off the event loop), checked
against the request's limits, and turned into what the chat template reads: an image part (`{"type": "image"}`,
where the template writes the model's placeholder) or text (a PDF's text layer). Images are resized here to
exactly the size the model's processor would pick (`vision/spec.py`), so the prompt's token count is known,
and the context checked, before the engine does any work. Nothing is ever dropped: an image for a model that
cannot see gets a 400 naming the model.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from mlx_router.config.settings import Settings
from mlx_router.conversation.model import FilePart, ImagePart, Message, Part, TextPart
from mlx_router.engine.params import ImageInput
from mlx_router.errors import InvalidRequestError
from mlx_router.vision.inputs import MediaDecoder
from mlx_router.vision.limits import MediaBudget
from mlx_router.vision.media import DecodedImage, PdfDocument, resize

PdfMode = Literal["images", "text", "both"]
LOW_DETAIL_PIXELS = 448 * 448  # `detail: "low"`: a small, cheap view of the image, as OpenAI's low detail is


@dataclass
class ChatMedia:
    """The request's content lists as templates read them (by message index) and its images in prompt order."""

    contents: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    images: list[DecodedImage] = field(default_factory=list)

    def image_inputs(self) -> list[ImageInput]:
        return [ImageInput(i.digest, i.width, i.height, i.rgb) for i in self.images]


class MediaPreparer:
    """Decodes and sizes a chat's media for one model (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._decoder = MediaDecoder(settings.server.media)

    def close(self) -> None:
        self._decoder.close()

    async def prepare(self, model_id: str, messages: list[Message], vision: Any, prefix: str = "messages") -> ChatMedia:
        """`vision`: the model's VisionSpec, or None for a model without images; `prefix`: where the API keeps
        its messages (error `param`s name it)."""
        ms = self._settings.model_settings(model_id)
        mode: PdfMode = ms.pdf_mode or self._settings.defaults.pdf_mode or ("images" if vision else "text")
        if vision is None:
            mode = "text"  # a text model reads a PDF's text layer
        cap = ms.vision_max_pixels or self._settings.defaults.vision_max_pixels
        budget = MediaBudget(self._settings.server.media)
        media = ChatMedia()
        for index, message in enumerate(messages):
            if not message.has_media() or message.content is None:
                continue
            parts: list[dict[str, Any]] = []
            param = f"{prefix}.{index}.content"
            for part in message.content:
                parts.extend(await self._part(part, param, model_id, vision, mode, cap, budget, media))
            media.contents[index] = parts
        return media

    async def _part(
        self,
        part: Part,
        param: str,
        model_id: str,
        vision: Any,
        mode: PdfMode,
        cap: int,
        budget: MediaBudget,
        media: ChatMedia,
    ) -> list[dict[str, Any]]:
        if isinstance(part, TextPart):
            return [{"type": "text", "text": part.text}]
        if isinstance(part, ImagePart):
            url, detail = part.url, part.detail
            if vision is None and not url[:32].lower().startswith("data:application/pdf"):
                raise _no_vision(model_id, param)  # before any decoding: it would be wasted
            want_images, want_text = mode in ("images", "both"), mode in ("text", "both")
            decoded = await asyncio.to_thread(
                lambda: self._decoder.decode_image_url(
                    url, budget, want_images=want_images, want_text=want_text, param=param
                )
            )
            if isinstance(decoded, PdfDocument):
                return await asyncio.to_thread(self._pdf, decoded, model_id, vision, mode, cap, media)
            size_cap = min(cap, LOW_DETAIL_PIXELS) if detail == "low" else cap
            return [await asyncio.to_thread(self._image, decoded, vision, size_cap, media)]
        if isinstance(part, FilePart):
            file_data, filename = part.data, part.filename
            want_images = mode in ("images", "both")
            want_text = mode in ("text", "both")
            doc = await asyncio.to_thread(
                lambda: self._decoder.decode_file(file_data, filename, budget, want_images, want_text, param=param)
            )
            return await asyncio.to_thread(self._pdf, doc, model_id, vision, mode, cap, media)
        raise InvalidRequestError(f"content parts of type {type(part).__name__} are not supported", param=param)

    def _pdf(
        self, doc: PdfDocument, model_id: str, vision: Any, mode: PdfMode, cap: int, media: ChatMedia
    ) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if mode in ("images", "both"):
            if vision is None:
                raise _no_vision(model_id, None)
            parts.extend(self._image(page, vision, cap, media) for page in doc.pages)
        if mode in ("text", "both"):
            parts.append({"type": "text", "text": doc.marked_text() + "\n\n"})  # apart from the text after it
        return parts

    @staticmethod
    def _image(image: DecodedImage, vision: Any, cap: int, media: ChatMedia) -> dict[str, Any]:
        width, height = vision.target_size(image.width, image.height, cap)
        if (width, height) != (image.width, image.height):
            image = resize(image, width, height)
        media.images.append(image)
        return {"type": "image"}


def _no_vision(model_id: str, param: str | None) -> InvalidRequestError:
    return InvalidRequestError(
        f"{model_id} does not accept images: it is not a vision model (a PDF reaches it as its text layer)",
        param=param,
        code="model_without_vision",
    )
