"""The Responses renderer: API-neutral generation events -> OpenAI's Response object and its stream events.

One `ResponseBuilder` reads the events of one generation, whether they come as they are generated (a stream)
or all at the end (a whole answer): the stream's items and the final Response are built by the same code, so
their ids and texts agree (Codex checks). Events come in OpenAI's order: `response.created`,
`response.in_progress`, then per output item `output_item.added`, its part's `content_part.added`, deltas,
`.done` events, `output_item.done`, and last `response.completed` (or `.incomplete`, or `.failed`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Literal

from mlx_router.errors import RouterError
from mlx_router.parsing.events import ContentDelta, OutputEvent, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from mlx_router.protocol.responses_output import (
    ArgumentsDelta,
    ContentPartEvent,
    CustomInputDone,
    CustomToolCallOut,
    FunctionArgumentsDone,
    FunctionCallOut,
    IncompleteDetails,
    InputTokensDetails,
    Logprob,
    MessageOut,
    OutputItemEvent,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    OutputTokensDetails,
    ReasoningOut,
    ReasoningText,
    ReasoningTextDelta,
    ReasoningTextDone,
    ResponseErrorOut,
    ResponseEvent,
    ResponseObject,
    ResponseUsage,
    StreamEvent,
)

Item = MessageOut | ReasoningOut | FunctionCallOut | CustomToolCallOut


def new_item_id(prefix: str) -> str:
    """An output item's id in OpenAI's shape (`msg_`, `rs_`, `fc_`, `ctc_` + hex)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """Builds one Response from generation events; each method returns the stream events it produced.

    `custom_tools`: names of the request's freeform tools, whose calls become `custom_tool_call` items with the
    raw input (the generation service unwraps it); every other call is a `function_call`.
    """

    def __init__(self, response: ResponseObject, custom_tools: set[str]) -> None:
        self.response = response
        self._custom = custom_tools
        self._sequence = 0
        self._open: Item | None = None  # the item being written (the last of `response.output`)
        self._calls: dict[int, Item] = {}  # a call's item by the generation's call index
        self._logprobs: list[Logprob] = []  # of the tokens behind the next events

    # ---- events --------------------------------------------------------------------------------------

    def start(self) -> list[StreamEvent]:
        snapshot = self.response.model_copy(deep=True)
        return [
            ResponseEvent(type="response.created", sequence_number=self._next(), response=snapshot),
            ResponseEvent(type="response.in_progress", sequence_number=self._next(), response=snapshot),
        ]

    def logprobs(self, items: list[Logprob]) -> None:
        """The logprobs of the tokens behind the events that follow: they go with the next output text (the
        tokens of thinking or of a call have none in the Response)."""
        self._logprobs.extend(items)

    def feed(self, event: OutputEvent) -> list[StreamEvent]:
        """One parser event (text, reasoning, a call's start or a piece of its arguments)."""
        if isinstance(event, ContentDelta):
            return self._text(event.text, MessageOut) if event.text else []
        if isinstance(event, ReasoningDelta):
            return self._text(event.text, ReasoningOut) if event.text else []
        if isinstance(event, ToolCallStart):
            return self._call_start(event)
        if isinstance(event, ToolCallArgsDelta):
            return self._call_args(event)
        return []

    def finish(
        self, reason: str, input_tokens: int, output_tokens: int, cached_tokens: int, reasoning_tokens: int
    ) -> list[StreamEvent]:
        """The generation ended (`reason` "length": cut at the output limit): close the open item and give the
        Response its status and usage. Returns the closing events, the last one `response.completed` or
        `response.incomplete`."""
        cut = reason == "length"
        events = self._close("incomplete" if cut else "completed")
        r = self.response
        r.usage = ResponseUsage(
            input_tokens=input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
            output_tokens=output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
            total_tokens=input_tokens + output_tokens,
        )
        if cut:
            r.status, r.incomplete_details = "incomplete", IncompleteDetails(reason="max_output_tokens")
        else:
            r.status, r.completed_at = "completed", int(time.time())
        kind: Literal["response.completed", "response.incomplete"] = (
            "response.incomplete" if cut else "response.completed"
        )
        events.append(ResponseEvent(type=kind, sequence_number=self._next(), response=r))
        return events

    def failed(self, error: RouterError) -> ResponseEvent:
        """The event that ends a stream that failed: `response.failed`, the error in the Response."""
        r = self.response.model_copy(deep=True)
        r.status = "failed"
        r.error = ResponseErrorOut(code=error.code or error.type, message=error.message)
        return ResponseEvent(type="response.failed", sequence_number=self._next(), response=r)

    # ---- items ---------------------------------------------------------------------------------------

    def _next(self) -> int:
        number = self._sequence
        self._sequence += 1
        return number

    def _index(self) -> int:
        return len(self.response.output) - 1

    def _text(self, text: str, kind: type[MessageOut] | type[ReasoningOut]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        item = self._open
        if not isinstance(item, kind):
            events += self._close("completed")
            # added with no part, then its one part (OpenAI's order)
            if kind is MessageOut:
                message = MessageOut(id=new_item_id("msg"))
                self._add(message, events)
                message.content.append(OutputText())
                item = message
            else:
                reasoning = ReasoningOut(id=new_item_id("rs"))
                self._add(reasoning, events)
                reasoning.content.append(ReasoningText())
                item = reasoning
            part = item.content[0]
            events.append(
                ContentPartEvent(
                    type="response.content_part.added",
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=self._index(),
                    part=part.model_copy(),
                )
            )
        assert isinstance(item, MessageOut | ReasoningOut)
        item.content[0].text += text
        index = self._index()
        if isinstance(item, MessageOut):
            logprobs, self._logprobs = self._logprobs, []
            item.content[0].logprobs += logprobs
            events.append(
                OutputTextDelta(
                    sequence_number=self._next(), item_id=item.id, output_index=index, delta=text, logprobs=logprobs
                )
            )
        else:
            self._logprobs = []
            events.append(
                ReasoningTextDelta(sequence_number=self._next(), item_id=item.id, output_index=index, delta=text)
            )
        return events

    def _call_start(self, event: ToolCallStart) -> list[StreamEvent]:
        self._logprobs = []
        events = self._close("completed")
        item: Item
        if event.name in self._custom:
            item = CustomToolCallOut(id=new_item_id("ctc"), call_id=event.id, name=event.name)
        else:
            item = FunctionCallOut(id=new_item_id("fc"), call_id=event.id, name=event.name)
        self._calls[event.index] = self._add(item, events)
        return events

    def _call_args(self, event: ToolCallArgsDelta) -> list[StreamEvent]:
        item = self._calls.get(event.index)
        if item is None or not event.text:
            return []
        if isinstance(item, CustomToolCallOut):
            item.input += event.text
            kind: Literal["response.function_call_arguments.delta", "response.custom_tool_call_input.delta"] = (
                "response.custom_tool_call_input.delta"
            )
        else:
            assert isinstance(item, FunctionCallOut)
            item.arguments += event.text
            kind = "response.function_call_arguments.delta"
        index = self.response.output.index(item)
        return [
            ArgumentsDelta(
                type=kind, sequence_number=self._next(), item_id=item.id, output_index=index, delta=event.text
            )
        ]

    def _add(self, item: Item, events: list[StreamEvent]) -> Item:
        self.response.output.append(item)
        self._open = item
        events.append(
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=self._index(),
                item=item.model_copy(deep=True),
            )
        )
        return item

    def _close(self, status: Literal["completed", "incomplete"]) -> list[StreamEvent]:
        """End the open item: its `.done` events, then `output_item.done` with the whole item."""
        item, self._open = self._open, None
        if item is None:
            return []
        index = self.response.output.index(item)
        item.status = status
        events: list[StreamEvent] = []
        if isinstance(item, MessageOut | ReasoningOut):
            part = item.content[0]
            done: Callable[..., StreamEvent] = OutputTextDone if isinstance(item, MessageOut) else ReasoningTextDone
            events.append(done(sequence_number=self._next(), item_id=item.id, output_index=index, text=part.text))
            events.append(
                ContentPartEvent(
                    type="response.content_part.done",
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    part=part.model_copy(),
                )
            )
        elif isinstance(item, FunctionCallOut):
            events.append(
                FunctionArgumentsDone(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=index,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        else:
            events.append(
                CustomInputDone(sequence_number=self._next(), item_id=item.id, output_index=index, input=item.input)
            )
        events.append(
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self._next(),
                output_index=index,
                item=item.model_copy(deep=True),
            )
        )
        return events
