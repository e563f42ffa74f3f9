"""gpt-oss thinking (the harmony `analysis` channel) for requests that offer no tools.

With tools, the harmony tool parser separates the thinking itself (`handles_reasoning`) and this parser is
not used. Without tools, nothing the model writes is a call: a message to a function stays text.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from mlx_router.parsing.events import ContentDelta, OutputEvent, ReasoningDelta
from mlx_router.parsing.reasoning.base import ReasoningParser
from mlx_router.parsing.tools.grammar import Markup, budgeted_text, regex_literal
from mlx_router.parsing.tools.harmony import CHANNEL, END, MESSAGE, START, HarmonyToolParser
from mlx_router.parsing.tools.specs import ToolSpecs


def _text_events(events: list[OutputEvent]) -> list[ContentDelta | ReasoningDelta]:
    return [e for e in events if isinstance(e, (ContentDelta, ReasoningDelta))]


class HarmonyReasoningParser(ReasoningParser):
    """Splits harmony output into reasoning (analysis) and content (final, preambles, any other message)."""

    name = "harmony"

    def __init__(self, *, in_reasoning: bool = False) -> None:
        super().__init__(in_reasoning=in_reasoning)
        self._channels = HarmonyToolParser()
        self._channels.specs = ToolSpecs(None, any_name=False)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """The same models as the harmony tool format."""
        return HarmonyToolParser.detect(chat_template, vocab)

    @classmethod
    def prompt_opens_reasoning(cls, prompt_text: str) -> bool:
        """Harmony prompts end with `<|start|>assistant`: the output names its channel itself."""
        return False

    @classmethod
    def answer_grammar(
        cls, answer: str, special_tokens: Mapping[str, int] | None = None, think_budget: int | None = None
    ) -> str:
        """Lark text that puts a forced answer (`answer`: a rule body, e.g. `%json {...}`) where harmony
        writes answers: after an optional analysis message (the thinking, capped at `think_budget` tokens
        where `<|end|>` is a token), in the final channel. Forcing the answer at the very start instead
        would push the model out of its format."""
        markup = Markup(special_tokens, HarmonyToolParser.markers)
        thought = "/(?s:.+)/"
        if not markup.is_token(END):  # text that cannot contain the end of the message
            thought = f"/(?s:.+)/ & ~/(?s:.*){regex_literal(END)}(?s:.*)/"
        ref, text_rule = "THOUGHT", f"THOUGHT: {thought}"
        if think_budget is not None and markup.is_token(END):
            ref, text_rule = "thought", budgeted_text("thought", think_budget)
        lines = [
            f'start: analysis? {markup(CHANNEL)} "final" {markup(MESSAGE)} answer',
            f'analysis: {markup(CHANNEL)} "analysis" {markup(MESSAGE)} {ref}? {markup(END)} '
            f'{markup(START)} "assistant"',
            text_rule,
            f"answer: {answer}",
        ]
        return "\n".join(lines) + "\n"

    def feed(self, text: str) -> list[ContentDelta | ReasoningDelta]:
        """Consume the next decoded text delta."""
        return _text_events(self._channels.feed(text))

    def finish(self) -> list[ContentDelta | ReasoningDelta]:
        """Flush what is held back at the end of the output."""
        return _text_events(self._channels.finish())

    def parse(self, text: str) -> tuple[str | None, str]:
        """(reasoning or None, content) of a whole output."""
        events = _text_events(self._channels.parse_events(text))
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        return reasoning or None, "".join(e.text for e in events if isinstance(e, ContentDelta))
