"""What the serving layer knows of a model before it generates: template, parsers, context length, tools."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from mlx_router.config.model_files import context_length, read_json
from mlx_router.config.settings import ModelSettings, Settings
from mlx_router.engine.manager import MLXModelManager
from mlx_router.errors import InvalidRequestError
from mlx_router.parsing.registry import (
    detect_reasoning_parser,
    detect_tool_parser,
    get_reasoning_parser,
    get_tool_parser,
)
from mlx_router.serving.prompt_tokens import PromptEncoder
from mlx_router.serving.templates import ChatTemplateRenderer
from mlx_router.vision.spec import VisionSpec, read_vision_spec


@dataclass
class ModelProfile:
    """One model's rendering and parsing setup, built once from its tokenizer and config entry."""

    model_id: str
    tokenizer: Any
    renderer: ChatTemplateRenderer
    settings: ModelSettings
    tool_parser: str | None
    reasoning_parser: str | None
    context_tokens: int | None
    vocab_size: int
    prompts: PromptEncoder  # chat prompt text to ids
    vision: VisionSpec | None = None  # a model served with its vision tower: how its images become tokens
    # Resolved once when the profile is built, never per request:
    tool_parser_class: Any = None  # the tool parser's class (`parsing/tools/`)
    reasoning_parser_class: Any = None  # the reasoning parser's class (`parsing/reasoning/`)
    special_tokens: dict[str, int] = field(default_factory=dict)  # the tokenizer's added tokens -> ids
    think_tags: tuple[str, str] | None = None  # the reasoning format's open and close tags, as text
    # the same tags for grammars: a token id where the tag is one added token, else its text
    think_markers: tuple[str | int, str | int] | None = None

    @property
    def supports_tools(self) -> bool:
        if self.settings.supports_tools is not None:
            return self.settings.supports_tools
        return self.tool_parser is not None


class ProfileStore:
    """Builds and caches ModelProfiles (one per model id)."""

    def __init__(self, settings: Settings, manager: MLXModelManager) -> None:
        self._settings = settings
        self._manager = manager
        self._profiles: dict[str, ModelProfile] = {}

    async def get(self, model_id: str) -> ModelProfile:
        profile = self._profiles.get(model_id)
        if profile is None:
            entry = self._manager.resolve(model_id)
            if self._settings.embedding_spec(entry) is not None:
                raise InvalidRequestError(
                    f"'{model_id}' is an embedding model: it serves POST /v1/embeddings, not text generation",
                    param="model",
                    code="model_not_supported",
                )
            tokenizer = await self._manager.tokenizer(model_id)
            profile = await asyncio.to_thread(self._build, model_id, tokenizer, entry)
            self._profiles[model_id] = profile
        return profile

    def _build(self, model_id: str, tokenizer: Any, entry: Any) -> ModelProfile:
        path = entry.path
        ms = self._settings.model_settings(model_id)
        renderer = ChatTemplateRenderer(tokenizer, ms.chat_template)
        vocab = tokenizer.get_vocab().keys()
        tool_parser = ms.tool_parser or detect_tool_parser(renderer.source, vocab)
        reasoning = ms.reasoning_parser or detect_reasoning_parser(renderer.source, vocab)
        config = read_json(path / "config.json")
        context = ms.max_context_tokens or context_length(config)
        vocab_size = int(config.get("vocab_size") or len(tokenizer))
        prompts = PromptEncoder(tokenizer)
        mode = self._settings.vision_path(entry) if self._settings.vision_enabled(entry) else None
        vision = read_vision_spec(path, config, solo=mode == "solo") if mode is not None else None
        special: dict[str, int] = dict(tokenizer.get_added_vocab())
        reasoning_class = get_reasoning_parser(reasoning) if reasoning is not None else None
        markers = getattr(reasoning_class, "markers", None)
        tags: tuple[str, str] | None = markers if isinstance(markers, tuple) else None
        return ModelProfile(
            model_id,
            tokenizer,
            renderer,
            ms,
            tool_parser,
            reasoning,
            context,
            vocab_size,
            prompts,
            vision,
            tool_parser_class=get_tool_parser(tool_parser) if tool_parser is not None else None,
            reasoning_parser_class=reasoning_class,
            special_tokens=special,
            think_tags=tags,
            think_markers=None if tags is None else (_id_or_text(tags[0], special), _id_or_text(tags[1], special)),
        )


def _id_or_text(tag: str, special: dict[str, int]) -> str | int:
    return special.get(tag, tag)
