"""Turning a Conversation (from any API) into a ready generation: template, media, tools, reasoning, grammar,
limits.

Everything that can make a request invalid is checked here, before a byte is streamed, so the client gets a
400 with the reason instead of a broken stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mlx_router.config.settings import Settings
from mlx_router.constraints.custom_tools import grammar_tools
from mlx_router.constraints.grammars import (
    UnsupportedSchemaError,
    grammar_from_lark,
    lark_json,
    response_format_grammar,
    response_format_schema,
    thinking_budget_grammar,
)
from mlx_router.conversation.model import Conversation, CustomTool
from mlx_router.conversation.normalize import template_messages, template_tools
from mlx_router.engine.params import GenerationRequest
from mlx_router.engine.resource_monitor import ResourceMonitor
from mlx_router.errors import InvalidRequestError, TemplateRejectedError
from mlx_router.observability.ids import RequestId
from mlx_router.parsing.pipeline import OutputPipeline
from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.serving.media import ChatMedia, MediaPreparer
from mlx_router.serving.offload import INLINE_ENCODE_CHARS, INLINE_RENDER_CHARS, run_sized
from mlx_router.serving.params import output_limit, sampling_params
from mlx_router.serving.profiles import ModelProfile, ProfileStore
from mlx_router.serving.templates import TemplateRenderError


@dataclass
class ToolPlan:
    """How this request uses tools: what is offered to the model and how its output is parsed."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    parser: str | None = None
    mode: ToolChoiceMode | None = None  # None: no tools
    named: str | None = None
    parallel: bool = True
    custom: list[CustomTool] = field(default_factory=list)  # the freeform tools, whose grammars hold their input


@dataclass(frozen=True)
class ThinkingPlan:
    """Where the prompt leaves a thinking model, for the grammars that force its answer."""

    allowed: bool  # the output may think first (the prompt did not close the thinking block)
    in_reasoning: bool  # the prompt opened the block: the output starts inside it
    budget: int  # thinking tokens allowed before a forced answer: the request's budget, else half the output limit
    asked: bool = False  # the request set the budget: enforce it even where nothing else is constrained


@dataclass
class PreparedGeneration:
    """A validated conversation, ready to run."""

    id: str
    created: int
    conversation: Conversation
    profile: ModelProfile
    generation: GenerationRequest
    stops: list[str]
    prompt_text: str
    tool_plan: ToolPlan
    in_reasoning: bool

    def pipeline(self, *, stream: bool = False) -> OutputPipeline:
        """A fresh output parser chain for this request's answer.

        Streams announce a call as soon as its name is known (eager); with the call grammar on (see
        `constrain_tool_calls`) a started call always completes validly, so both modes agree.
        """
        tools = None
        if self.tool_plan.parser is not None:
            tools = self.profile.tool_parser_class(self.tool_plan.tools, eager=stream)
        reasoning = None
        reasoning_class = self.profile.reasoning_parser_class
        if reasoning_class is not None and not (tools is not None and tools.handles_reasoning):
            reasoning = reasoning_class(in_reasoning=self.in_reasoning)
        return OutputPipeline(reasoning, tools)


class GenerationPreparer:
    """Validates conversations and builds their generation."""

    def __init__(self, settings: Settings, profiles: ProfileStore, monitor: ResourceMonitor) -> None:
        self._settings = settings
        self._profiles = profiles
        self._monitor = monitor
        self._media = MediaPreparer(settings)

    def close(self) -> None:
        """End the media decoder's PDF workers."""
        self._media.close()

    async def prepare(
        self, conv: Conversation, rid: RequestId | None = None, id_prefix: str = "chatcmpl"
    ) -> PreparedGeneration:
        """`rid`: the request's id (`X-Request-ID`); the response's id is `<id_prefix>-<id>`."""
        received = time.monotonic()
        rid = rid or RequestId.new()
        profile, media, plan, prompt_text, tokens = await self._prompt(conv, check_context=True)
        limit = output_limit(
            conv.max_tokens,
            profile.settings,
            self._settings.defaults,
            self._monitor.snapshot().pressure,
            len(tokens),
            profile.context_tokens,
            cap_to_room=conv.max_tokens_policy == "cap",
            param=conv.param_prefix,
        )
        think = self._thinking(profile, prompt_text, limit, conv.thinking_budget)
        grammar = (
            self._tool_grammar(plan, profile, think)
            or self._format_grammar(conv, profile, think)
            or self._budget_grammar(plan, profile, think)
        )
        gen = GenerationRequest(
            request_id=rid.engine_id(id_prefix),
            model_id=conv.model,
            prompt_tokens=tokens,
            max_tokens=limit,
            sampling=sampling_params(conv.sampling, profile.settings, profile.vocab_size),
            logprobs=conv.logprobs,
            grammar=grammar,
            ignore_eos=conv.ignore_eos,
            received=received,
            images=media.image_inputs(),
            prompt_text=prompt_text if profile.vision is not None and profile.vision.solo else None,
            encode_bytes=max((profile.vision.encode_bytes(i.width, i.height) for i in media.images), default=0)
            if profile.vision is not None
            else 0,
        )
        return PreparedGeneration(
            rid.response_id(id_prefix),
            int(time.time()),
            conv,
            profile,
            gen,
            conv.stop,
            prompt_text,
            plan,
            think.in_reasoning,
        )

    async def count_tokens(self, conv: Conversation) -> int:
        """The prompt's tokens as the model would see them (template, tools, images), also for a prompt past
        the model's context: a client counts to learn whether it fits."""
        return len((await self._prompt(conv, check_context=False))[4])

    async def _prompt(
        self, conv: Conversation, *, check_context: bool
    ) -> tuple[ModelProfile, ChatMedia, ToolPlan, str, list[int]]:
        """The conversation rendered and encoded: (profile, media, tool plan, prompt text, prompt ids).
        `check_context`: a text sure to overflow the context is refused before it is encoded."""
        profile = await self._profiles.get(conv.model)
        media = ChatMedia()
        if any(m.has_media() for m in conv.messages):
            media = await self._media.prepare(conv.model, conv.messages, profile.vision, conv.param_prefix)
        plan = self._tool_plan(conv, profile)
        kwargs = self._template_kwargs(conv, profile)
        chars = sum(len(m.text() or "") for m in conv.messages)
        prompt_text = await run_sized(chars, INLINE_RENDER_CHARS, self._render, profile, conv, plan, kwargs, media)
        if media.images and profile.vision is not None:
            counts = [profile.vision.token_count(i.width, i.height) for i in media.images]
            prompt_text = profile.vision.expand_text(prompt_text, counts)
        if check_context:
            profile.prompts.refuse_oversized(prompt_text, profile.context_tokens, conv.param_prefix)  # before encoding
        tokens = await run_sized(len(prompt_text), INLINE_ENCODE_CHARS, profile.prompts.encode, prompt_text)
        if media.images and profile.vision is not None:
            counts = [profile.vision.token_count(i.width, i.height) for i in media.images]
            tokens = profile.vision.expand(tokens, counts)
        return profile, media, plan, prompt_text, tokens

    def _template_kwargs(self, conv: Conversation, profile: ModelProfile) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if profile.settings.reasoning_response is not None:
            kwargs["enable_thinking"] = profile.settings.reasoning_response == "enable"
        if conv.thinking is not None:
            kwargs["enable_thinking"] = conv.thinking
        if conv.reasoning_effort is not None:
            kwargs["reasoning_effort"] = conv.reasoning_effort
        kwargs.update(conv.template_kwargs)
        return kwargs

    def _render(self, profile: ModelProfile, conv: Conversation, plan: ToolPlan, kwargs: dict, media: ChatMedia) -> str:
        try:
            return profile.renderer.render(
                template_messages(conv, media.contents),
                tools=plan.tools or None,
                add_generation_prompt=True,
                **kwargs,
            )
        except TemplateRenderError as e:
            raise TemplateRejectedError(
                f"the chat template rejected these messages: {e}", param=conv.param_prefix
            ) from None

    def _tool_plan(self, conv: Conversation, profile: ModelProfile) -> ToolPlan:
        choice = conv.tool_choice
        forced = choice.mode in ("required", "named")
        enabled = self._settings.defaults.enable_function_calling and profile.supports_tools
        if not conv.tools or choice.mode == "none":
            if forced:
                raise InvalidRequestError("tool_choice requires tools", param="tool_choice")
            return ToolPlan()
        if not enabled:
            if forced:
                raise InvalidRequestError(f"tool calling is disabled for {conv.model}", param="tool_choice")
            return ToolPlan()
        tools = template_tools(conv.tools)
        custom = [t for t in conv.tools if isinstance(t, CustomTool)]
        plan = ToolPlan(
            tools=tools, parser=profile.tool_parser, mode="auto", parallel=conv.parallel_tool_calls, custom=custom
        )
        if forced and plan.parser is None:
            raise InvalidRequestError(f"no tool-call format is known for {conv.model}", param="tool_choice")
        if choice.mode == "named":
            if not any(t["function"]["name"] == choice.name for t in tools):
                raise InvalidRequestError(
                    f"tool_choice names {choice.name!r}, which is not in tools", param="tool_choice"
                )
            plan.mode, plan.named = "named", choice.name
        elif choice.mode == "required":
            plan.mode = "required"
        return plan

    def _tool_grammar(self, plan: ToolPlan, profile: ModelProfile, think: ThinkingPlan) -> str | None:
        """The grammar forcing the model's call markup: always for required/named, and for auto when
        `constrain_tool_calls` is on (calls then always parse and match their schemas)."""
        if plan.parser is None or plan.mode is None:
            return None
        if plan.mode == "auto" and not self._settings.defaults.constrain_tool_calls:
            return None
        tools = [t for t in plan.tools if plan.named is None or t["function"]["name"] == plan.named]
        parser = profile.tool_parser_class(plan.tools)
        tags = profile.think_tags if think.allowed else None
        try:
            tools = grammar_tools(tools, plan.custom, forced=plan.mode != "auto")
            return parser.grammar(
                tools,
                mode=plan.mode,
                parallel=plan.parallel,
                special_tokens=profile.special_tokens,
                think=tags,
                in_reasoning=think.in_reasoning,
                think_budget=None if plan.mode == "auto" and not think.asked else think.budget,
            )
        except UnsupportedSchemaError as e:
            if plan.mode == "auto":  # free text stays possible: parse the calls without a grammar
                return None
            raise InvalidRequestError(str(e), param="tools") from None

    def _format_grammar(self, conv: Conversation, profile: ModelProfile, think: ThinkingPlan) -> str | None:
        if conv.response_format is None:
            return None
        fmt = conv.response_format
        try:
            in_channel = self._answer_channel_grammar(fmt, profile, think)
            if in_channel is not None:
                return in_channel
            return response_format_grammar(
                fmt,
                think=profile.think_markers if think.allowed else None,
                in_reasoning=think.in_reasoning,
                think_budget=think.budget,
                tags_are_tokens=False,  # tags that are tokens come as ids; text tags are matched as text
            )
        except UnsupportedSchemaError as e:
            raise InvalidRequestError(str(e), param="response_format") from None

    @staticmethod
    def _answer_channel_grammar(fmt: dict[str, Any], profile: ModelProfile, think: ThinkingPlan) -> str | None:
        """The response_format grammar of a format whose answers have their own channel (harmony's final
        message, after the analysis), or None for the others."""
        schema = response_format_schema(fmt)
        if schema is None or not think.allowed or profile.reasoning_parser is None:
            return None
        answer = lark_json(schema, param="response_format")
        layout = profile.reasoning_parser_class.answer_grammar(answer, profile.special_tokens, think.budget)
        return None if layout is None else grammar_from_lark(layout)

    @staticmethod
    def _budget_grammar(plan: ToolPlan, profile: ModelProfile, think: ThinkingPlan) -> str | None:
        """A thinking budget the request asked for, where no other grammar holds the output: the thinking block
        is cut at the budget and the answer is free. Not with tools offered (free text there would have to
        admit the call markup's special tokens), nor for a model whose close tag is plain text."""
        if not think.asked or not think.allowed or plan.mode is not None or profile.think_markers is None:
            return None
        return thinking_budget_grammar(profile.think_markers, in_reasoning=think.in_reasoning, budget=think.budget)

    @staticmethod
    def _thinking(profile: ModelProfile, prompt_text: str, limit: int, asked: int | None) -> ThinkingPlan:
        parser = profile.reasoning_parser_class
        if parser is None:
            return ThinkingPlan(allowed=False, in_reasoning=False, budget=limit)
        return ThinkingPlan(
            # a prompt that closed the block (Qwen3's enable_thinking=False) leaves no thinking to allow
            allowed=not parser.prompt_closes_reasoning(prompt_text),
            in_reasoning=bool(parser.prompt_opens_reasoning(prompt_text)),
            budget=max(1, min(asked, limit - 1) if asked is not None else limit // 2),
            asked=asked is not None,
        )
