"""The demo models as the clients people try first use them: OpenWebUI sends its 36 built-in tools (~9,300 prompt
tokens) with every chat, which a 4,096-token context refused with context_length_exceeded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings
from mlx_router.demo import DEMO_MODEL_ID, VISION_MODEL_ID, ensure_demo_model, ensure_demo_vision_model

REPO = Path(__file__).resolve().parents[2]
OPENWEBUI_TOOLS = 36
OPENWEBUI_PROMPT_TOKENS = 9_300

# The shape of OpenWebUI's built-in tools (web search, knowledge bases, notes, chats, memories, images, code):
# a name, a paragraph of description and a few documented parameters each.
_TOPICS = ("web", "knowledge", "note", "chat", "memory", "image", "code", "channel", "file")
_ACTIONS = ("search", "view", "write", "list")


def openwebui_like_tools() -> list[dict[str, Any]]:
    """36 function tools in ~45,000 characters of JSON: ~11,000 tokens at 4 characters a token (OpenWebUI's send
    ~9,300), ~14,900 of the demo's tokens."""
    tools = []
    for i in range(OPENWEBUI_TOOLS):
        topic, action = _TOPICS[i % len(_TOPICS)], _ACTIONS[i // len(_TOPICS)]
        description = (
            f"{action.capitalize()} the user's {topic} items. Use this tool when the user asks about their "
            f"{topic} items, refers to something they saved earlier, or when the answer depends on information "
            f"that is not in the conversation. Results are returned as a JSON list with an id, a title, a short "
            f"snippet and the time of the last change; call the view tool with an id to read one in full. "
        ) * 2
        properties = {
            "query": {"type": "string", "description": f"Words to look for in the {topic} items' titles and text."},
            "limit": {"type": "integer", "description": "How many results to return at most (1 to 50)."},
            "offset": {"type": "integer", "description": "How many results to skip, for paging."},
            "sort": {"type": "string", "enum": ["relevance", "newest", "oldest"], "description": "Result order."},
        }
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": f"{action}_{topic}_{i}",
                    "description": description,
                    "parameters": {"type": "object", "properties": properties, "required": ["query"]},
                },
            }
        )
    return tools


@pytest.fixture(scope="module")
def demo_client() -> Iterator[TestClient]:
    """The app serving both demo models (built once into the repo's cache, as tests/e2e/test_readme.py does)."""
    cache = REPO / ".cache" / "mlx-router"
    ensure_demo_model(cache)
    folder = ensure_demo_vision_model(cache).parent
    settings = parse_settings({"defaults": {"model_directory": str(folder), "scan_hf_cache": False}})
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.slow
@pytest.mark.parametrize("model", [DEMO_MODEL_ID, VISION_MODEL_ID])
def test_a_chat_with_openwebui_builtin_tools_is_accepted(demo_client: TestClient, model: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "tools": openwebui_like_tools(),
        "max_tokens": 4,
    }
    r = demo_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] >= OPENWEBUI_PROMPT_TOKENS, usage
    assert 1 <= usage["completion_tokens"] <= 4
