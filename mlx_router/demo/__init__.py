"""The built-in demo models: what the server serves when no model is installed, so the README works at once.

``ensure_demo_model()`` returns the folder of a tiny model (``mlx-router-demo``) built locally and offline on
first use, in seconds: a BPE tokenizer learnt from Python's standard library and a 300k-parameter llama
trained to answer the README's example chats (``mlx_router.demo.chats``) word for word, in Qwen's chat
format (ChatML, ``<tool_call>`` JSON, ``<think>`` reasoning). It knows nothing else.

``ensure_demo_vision_model()`` returns the folder beside it of a tiny Qwen2-VL (``mlx-router-demo-vision``) over
the same tokenizer, trained in seconds to name the colour of a solid-colour image or PDF page
(``mlx_router.demo.vision_chats``).

Importing this package does not import mlx; building the models does (``build.py``, ``training.py``,
``vision_build.py``, ``vision_training.py``).
"""

from mlx_router.demo.chats import DEMO_MODEL_ID, DemoChat, demo_chats, demo_tools
from mlx_router.demo.store import (
    default_cache_dir,
    demo_model_dir,
    ensure_demo_model,
    ensure_demo_vision_model,
    vision_model_dir,
)
from mlx_router.demo.vision_chats import VISION_MODEL_ID

__all__ = [
    "DEMO_MODEL_ID",
    "VISION_MODEL_ID",
    "DemoChat",
    "default_cache_dir",
    "demo_chats",
    "demo_model_dir",
    "demo_tools",
    "ensure_demo_model",
    "ensure_demo_vision_model",
    "vision_model_dir",
]
