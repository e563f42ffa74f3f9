"""The interface every tool-call parser implements."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from mlx_router.parsing.events import OutputEvent, ParsedOutput

ToolChoiceMode = Literal["auto", "required", "named"]


def new_call_id() -> str:
    """A unique tool-call id in OpenAI's shape (`call_` + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


class ToolCallParser(ABC):
    """Reads one model output (one request) and finds the tool calls in it.

    One instance serves one generation: `feed` is called with each decoded text delta as it is generated and
    returns events (content outside calls, call starts, argument fragments); `finish` flushes what is held
    back.
    `parse` reads a whole output at once (non-streaming responses) and must agree with feed/finish.

    Markup of a call never reaches content. Text that looked like a call but is not a valid one (bad JSON, an
    unknown function, arguments that break the tool's schema) is given back as content, so nothing is lost and
    nothing becomes a 500.
    """

    name: ClassVar[str]

    def __init__(self, tools: list[dict[str, Any]] | None = None, *, eager: bool = False) -> None:
        """`eager`: announce a call as soon as its name is known (streams), not once it is complete."""
        self.tools = tools or []
        self.eager = eager

    @classmethod
    @abstractmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Whether a model whose template/vocabulary look like this speaks this format."""

    @abstractmethod
    def feed(self, text: str) -> list[OutputEvent]:
        """Consume the next decoded text delta."""

    @abstractmethod
    def finish(self, *, cut: bool = False) -> list[OutputEvent]:
        """The output ended: flush held-back text and close any open call.

        `cut`: generation stopped at max_tokens. A call it was still writing is then not given back as content
        (raw markup must not reach the user): an announced call keeps the arguments sent so far, and an
        unannounced one, with the held-back tail, is dropped.
        """

    @abstractmethod
    def parse(self, text: str) -> ParsedOutput:
        """Split a whole output into content and tool calls (`reasoning` is None unless the format has it)."""

    @abstractmethod
    def grammar(
        self,
        tools: list[dict[str, Any]],
        *,
        mode: ToolChoiceMode,
        parallel: bool,
        special_tokens: Mapping[str, int] | None = None,
        think: tuple[str, str] | None = None,
        in_reasoning: bool = False,
        think_budget: int | None = None,
    ) -> str:
        """An llguidance Lark grammar that forces the model to answer with tool call(s) in this format.

        mode "required": one of `tools`; "named": `tools` holds the single named function; "auto" may return a
        grammar that allows free text and constrains only the calls. `parallel` False allows a single call.

        `special_tokens` maps the tokenizer's added tokens to their ids (`tokenizer.get_added_vocab()`): a
        marker found there is written as that token (llguidance cannot match its text), any other marker as
        plain text. None assumes the format's usual tokenizer, where `markers` are special tokens.

        `think` = (open, close) tags of a thinking model: one thinking block may come before the calls (with
        `in_reasoning` the prompt opened it and the output must close it). Formats with their own reasoning
        channel (harmony) ignore it.
        `think_budget`: the most tokens that thinking may take before the grammar forces its end (None: no
        limit), so that a forced answer always gets written.
        """

    call_openers: ClassVar[tuple[str, ...]] = ()
    """Text that starts a call; a reasoning parser treats it as the end of unclosed thinking."""

    markers: ClassVar[tuple[str, ...]] = ()
    """The format's markup strings that are single (special) tokens in the models that speak it."""

    handles_reasoning: ClassVar[bool] = False
    """True for formats (gpt-oss harmony) whose parser also emits ReasoningDelta events itself."""
