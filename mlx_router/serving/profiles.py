"""What the serving layer knows of a model before it generates: template, parsers, context length, tools."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from mlx_router.config.model_files import context_length, read_json
from mlx_router.config.settings import ModelSettings, Settings
from mlx_router.engine.manager import MLXModelManager
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

    @property
    def supports_tools(self) -> bool:
        if self.settings.supports_tools is not None:
            return self.settings.supports_tools
        return self.tool_parser is not None

    def think_markers(self) -> tuple[str | int, str | int] | None:
        """The model's thinking tags for grammars: a token id where the tag is one added token, else its text."""
        if self.reasoning_parser is None:
            return None
        markers = getattr(get_reasoning_parser(self.reasoning_parser), "markers", None)
        if not isinstance(markers, tuple):
            return None
        added = self.tokenizer.get_added_vocab()
        open_tag, close_tag = markers
        return (added.get(open_tag, open_tag), added.get(close_tag, close_tag))


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
        if tool_parser is not None:
            get_tool_parser(tool_parser)  # fail early on a bad configured name
        reasoning = ms.reasoning_parser or detect_reasoning_parser(renderer.source, vocab)
        config = read_json(path / "config.json")
        context = ms.max_context_tokens or context_length(config)
        vocab_size = int(config.get("vocab_size") or len(tokenizer))
        prompts = PromptEncoder(tokenizer)
        mode = self._settings.vision_path(entry) if self._settings.vision_enabled(entry) else None
        vision = read_vision_spec(path, config, solo=mode == "solo") if mode is not None else None
        return ModelProfile(
            model_id, tokenizer, renderer, ms, tool_parser, reasoning, context, vocab_size, prompts, vision
        )
