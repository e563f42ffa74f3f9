"""Recent Responses by id, for `previous_response_id`: their input and output as input items, bounded, LRU.

The server is otherwise stateless. A stored entry holds references to the (immutable) items of the request
and of its answer, and a follow-up's entry shares its parent's items, so a long chain costs a list of
references per response. Instructions and tools are not carried over (as OpenAI does: each request sends its
own).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mlx_router.errors import InvalidRequestError
from mlx_router.protocol.responses_input import (
    CustomToolCallItem,
    FunctionCallItem,
    InputText,
    MessageItem,
    ReasoningItem,
)
from mlx_router.protocol.responses_output import CustomToolCallOut, FunctionCallOut, MessageOut, ReasoningOut


class ResponseStore:
    """At most `size` responses' items (0: none, and `previous_response_id` is refused)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def history(self, response_id: str) -> list[Any]:
        """The items of `response_id` (its input, then its output), oldest first; a 400 for an unknown id."""
        if self._size == 0:
            raise InvalidRequestError(
                "previous_response_id is not available: this server keeps no responses (responses_store_size is 0); "
                "send the whole conversation in input",
                param="previous_response_id",
            )
        items = self._items.get(response_id)
        if items is None:
            raise InvalidRequestError(
                f"no response {response_id!r} is stored here: it was created with store false, is not among the "
                f"{self._size} most recent, or the server restarted; send the whole conversation in input",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        self._items.move_to_end(response_id)
        return list(items)

    def put(self, response_id: str, input_items: list[Any], output: list[Any]) -> None:
        """Keep a finished response: `input_items` as the request gave them (with its history), `output` its
        output items."""
        if self._size == 0:
            return
        self._items[response_id] = (*input_items, *(as_input_item(item) for item in output))
        self._items.move_to_end(response_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def as_input_item(item: Any) -> Any:
    """An output item as the input item that sends it back."""
    if isinstance(item, MessageOut):
        parts = [InputText(type="output_text", text=p.text) for p in item.content]
        return MessageItem(role="assistant", content=parts, id=item.id)
    if isinstance(item, ReasoningOut):
        return ReasoningItem(
            type="reasoning", id=item.id, content=[InputText(type="reasoning_text", text=p.text) for p in item.content]
        )
    if isinstance(item, FunctionCallOut):
        return FunctionCallItem(
            type="function_call", call_id=item.call_id, name=item.name, arguments=item.arguments, id=item.id
        )
    if isinstance(item, CustomToolCallOut):
        return CustomToolCallItem(
            type="custom_tool_call", call_id=item.call_id, name=item.name, input=item.input, id=item.id
        )
    raise TypeError(f"not an output item: {type(item).__name__}")
