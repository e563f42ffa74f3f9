"""The interface every reasoning parser implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import ClassVar

from mlx_router.parsing.events import ContentDelta, ReasoningDelta


class ReasoningParser(ABC):
    """Separates a model's thinking from its answer, for one generation.

    `in_reasoning` is True when the prompt itself opened the thinking block (templates that end the generation
    prompt with `<think>\\n`), so the output only closes it.
    """

    name: ClassVar[str]

    def __init__(self, *, in_reasoning: bool = False) -> None:
        self.in_reasoning = in_reasoning
        self.implicit_ends: tuple[str, ...] = ()
        """Texts that also end open thinking and stay in the content: the opener of a tool call that a
        model (Qwen3.5, Qwen3-Coder) starts without closing its thinking. OutputPipeline sets them."""

    @classmethod
    @abstractmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Whether a model whose template/vocabulary look like this thinks in this format."""

    @classmethod
    @abstractmethod
    def prompt_opens_reasoning(cls, prompt_text: str) -> bool:
        """Whether a rendered generation prompt already opened a thinking block that the output must close."""

    @classmethod
    def prompt_closes_reasoning(cls, prompt_text: str) -> bool:
        """Whether a rendered generation prompt ends with a closed (empty) thinking block, so the output is
        the answer alone (Qwen3's `enable_thinking=False` writes `<think>\\n\\n</think>\\n\\n`)."""
        return False

    @classmethod
    def answer_grammar(
        cls, answer: str, special_tokens: Mapping[str, int] | None = None, think_budget: int | None = None
    ) -> str | None:
        """Lark text placing a forced answer (`answer`: a rule body such as `%json {...}`) in the format's own
        answer channel, or None when the answer simply follows the thinking block (the default)."""
        return None

    @abstractmethod
    def feed(self, text: str) -> list[ContentDelta | ReasoningDelta]:
        """Consume the next decoded text delta."""

    @abstractmethod
    def finish(self) -> list[ContentDelta | ReasoningDelta]:
        """Flush what is held back at the end of the output."""

    @abstractmethod
    def parse(self, text: str) -> tuple[str | None, str]:
        """Split a whole output into (reasoning or None, content)."""
