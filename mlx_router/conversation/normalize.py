"""A conversation as chat templates read it: message dicts and tool definitions, the one place both are made.

Text parts are joined with nothing between them (a content list is one text split up, as clients send it); a
message whose parts hold images gets them as `{"type": "image"}` parts in their places (`serving/media.py` makes
those); a custom tool appears as a function of one string `input`, and a call to it as that function called with
the raw input. `serving/templates.py` then fits the dicts to what each template expects.
"""

from __future__ import annotations

import json
from typing import Any

from mlx_router.conversation.model import Conversation, CustomTool, FunctionTool, Message, Tool

CUSTOM_INPUT = "input"  # the one argument a custom tool's call carries, as templates see it


def join_text(texts: list[str]) -> str:
    """A message's text parts as one text: nothing between them (a content list is one text split up, as
    clients send it). The one place text parts are joined, whatever API or template."""
    return "".join(texts)


def template_messages(
    conversation: Conversation, contents: dict[int, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The messages as dicts. `contents`: content lists replacing those of the messages at their indexes (parts
    with images, `serving/media.py`)."""
    custom = {t.name for t in conversation.tools if isinstance(t, CustomTool)}
    return [_message(m, (contents or {}).get(index), custom) for index, m in enumerate(conversation.messages)]


def _message(m: Message, parts: list[dict[str, Any]] | None, custom: set[str]) -> dict[str, Any]:
    content: Any = m.text()
    if parts is not None:
        # text alone (a PDF's text layer for a text model) is joined as text parts always are
        texts_only = all(p.get("type") == "text" for p in parts)
        content = join_text([str(p.get("text") or "") for p in parts]) if texts_only else parts
    d: dict[str, Any] = {"role": m.role, "content": content}
    if m.name:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name,
                    "arguments": json.dumps({CUSTOM_INPUT: c.arguments}, ensure_ascii=False)
                    if c.name in custom
                    else c.arguments,
                },
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    if m.reasoning:
        d["reasoning_content"] = m.reasoning
    return d


def template_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """Tool definitions as templates read them (OpenAI's function shape, absent fields left out)."""
    return [_tool(t) for t in tools]


def _tool(tool: Tool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        fn: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            fn["description"] = tool.description
        if tool.parameters is not None:
            fn["parameters"] = tool.parameters
        if tool.strict is not None:
            fn["strict"] = tool.strict
        return {"type": "function", "function": fn}
    description = tool.description or "A tool whose input is free text."
    fn = {
        "name": tool.name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's input, as raw text."}},
            "required": [CUSTOM_INPUT],
        },
    }
    return {"type": "function", "function": fn}
