"""Tokenizers load one at a time, whatever the model (transformers' lazy imports are not safe from two threads at
once: concurrent first requests to two models got "cannot import name AutoTokenizer"), and once per model."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.settings import Settings
from mlx_router.engine import manager as manager_module
from mlx_router.engine.manager import MLXModelManager


class _Discovery:
    def resolve(self, model_id: str) -> ModelEntry:
        return ModelEntry(model_id, Path("/nonexistent") / model_id, 0, 0, "directory")


def test_tokenizer_loads_never_overlap_and_happen_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running, overlaps, loads = [0], [0], []
    lock = threading.Lock()

    def slow_open(path: Path) -> Any:
        with lock:
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        loads.append(path.name)
        return f"tokenizer of {path.name}"

    monkeypatch.setattr(manager_module, "open_tokenizer", slow_open)
    manager = MLXModelManager(Settings(), _Discovery(), None, None)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        return await asyncio.gather(*(manager.tokenizer(m) for m in ("a", "b", "c", "a", "b")))

    got = asyncio.run(main())
    assert got == ["tokenizer of a", "tokenizer of b", "tokenizer of c", "tokenizer of a", "tokenizer of b"]
    assert overlaps[0] == 1  # never two loads at once
    assert sorted(loads) == ["a", "b", "c"]  # each model's once
