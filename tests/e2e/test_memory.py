"""Memory and hot swaps seen from outside (issue 20, items 8-12): unloading gives memory back to the system,
eviction never takes a model from under its admitted requests, KV admission counts idle models as evictable,
a model that cannot load evicts nothing, and refusals known before a stream starts come as HTTP statuses."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

HI = [{"role": "user", "content": "Tell me a story about a robot."}]
MB = 1024**2


@pytest.fixture(scope="module")
def wide_llm_dir(model_cache_root: Path) -> Path:
    """A random llama of ~200 MB (hidden 1024, 8 layers, float16): big enough that what an unload leaves
    behind stands out from the engine's own ~90 MB."""
    from tests.fixtures import cache, models

    tok = models.cached_tokenizer("qwen", model_cache_root)
    params = {"flavour": "qwen", "hidden": 1024, "layers": 8, "dtype": "float16", "tokenizer": cache.dir_digest(tok)}
    return cache.cached_build(
        "wide",
        params,
        lambda tmp: models.build_random_llm(tmp, tok, dtype="float16", hidden=1024, layers=8),
        model_cache_root,
    )


def link_models(root: Path, targets: dict[str, Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        os.symlink(target, root / name, target_is_directory=True)
    return root


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def test_unloading_gives_the_memory_back_to_the_system(wide_llm_dir, random_llm_dir, tmp_path):
    """Item 8: load, serve and unload a 200 MB model three times, with a small model serving between; after
    each unload the engine's RSS is back near where it started. Without `malloc_trim` glibc kept ~185 MB of
    the freed heap from the second cycle on (the small model's buffers sit above the freed ones)."""
    root = link_models(tmp_path / "models", {"wide": wide_llm_dir, "tiny-a": random_llm_dir})
    weights = sum(p.stat().st_size for p in wide_llm_dir.glob("*.safetensors")) / MB
    with RouterServer(tmp_path / "srv", base_config(root)) as srv:
        client = srv.openai()
        pid = srv.health()["engine_pid"]
        base = rss_mb(pid)
        held = []
        for _ in range(3):
            assert httpx.post(srv.base_url + "/v1/models/wide/load", timeout=120).status_code == 200
            loaded = rss_mb(pid)
            client.chat.completions.create(model="wide", messages=HI, max_tokens=4)
            assert httpx.delete(srv.base_url + "/v1/models/wide", timeout=60).status_code == 200
            client.chat.completions.create(model="tiny-a", messages=HI, max_tokens=8)
            held.append(rss_mb(pid) - base)
            assert loaded - base > 0.8 * weights  # the model was really there
        print(f"engine RSS {base:.0f} MB at start; held after each unload: {[round(h) for h in held]} MB")
        assert max(held) < 0.35 * weights, (held, weights)
