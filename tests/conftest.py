"""Model fixtures for every test tier: tiny MLX models built offline by ``tests.fixtures`` and cached on
disk (``$MLX_ROUTER_TEST_CACHE``, default ``<repo>/.cache/test-models``): only the first run builds them.

``tests.fixtures.models`` is imported inside the fixtures so that collecting tests does not import mlx
(tests may check that some packages never do)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.fixtures import cache  # noqa: E402
from tests.fixtures.tokenizers import FLAVOURS  # noqa: E402


@pytest.fixture(scope="session")
def model_cache_root() -> Path:
    """Where built tokenizers and models are kept between runs."""
    return cache.cache_root()


@pytest.fixture(scope="session")
def tokenizer_dir(model_cache_root: Path) -> Path:
    """The qwen-flavoured tokenizer (ChatML, <tool_call>, <think>)."""
    from tests.fixtures import models

    return models.cached_tokenizer("qwen", model_cache_root)


@pytest.fixture(scope="session")
def random_llm_dir(model_cache_root: Path) -> Path:
    """A random-weight tiny llama with the qwen tokenizer (seed 0)."""
    from tests.fixtures import models

    return models.cached_random_llm("qwen", seed=0, root=model_cache_root)


@pytest.fixture(scope="session")
def random_llm_dir_b(model_cache_root: Path) -> Path:
    """Like ``random_llm_dir`` with another seed: same prompt, different greedy output."""
    from tests.fixtures import models

    return models.cached_random_llm("qwen", seed=1, root=model_cache_root)


@pytest.fixture(scope="session")
def trained_llm_dir(model_cache_root: Path) -> Callable[[str], Path]:
    """``trained_llm_dir(flavour)``: the model trained to answer ``cases_for(flavour)`` exactly."""

    def get(flavour: str) -> Path:
        from tests.fixtures import models

        return models.cached_trained_llm(flavour, model_cache_root)

    return get


@pytest.fixture(scope="session")
def tiny_vlm_dir(model_cache_root: Path) -> Callable[[str], Path]:
    """``tiny_vlm_dir(family)``: a random-weight tiny vision model (qwen2_vl, qwen2_5_vl, qwen3_vl, gemma3) that
    ``mlx_vlm.load`` and mlx-lm's text classes both read, or ``idefics3`` (SmolVLM), which only mlx-vlm reads
    (see ``tests.fixtures.vlm``)."""

    def get(family: str) -> Path:
        from tests.fixtures import vlm

        return vlm.cached_random_vlm(family, root=model_cache_root)

    return get


@pytest.fixture(scope="session")
def trained_vlm_dir(model_cache_root: Path) -> Path:
    """A tiny qwen2_vl trained to name the colour (red, green, blue, yellow, white, black) of a solid-colour image
    for one prompt (``tests.fixtures.vlm_training.colour_messages``); built in ~20 s on the first run."""
    from tests.fixtures import vlm

    return vlm.cached_trained_vlm(model_cache_root)


@pytest.fixture(scope="session")
def models_root(
    tmp_path_factory: pytest.TempPathFactory,
    random_llm_dir: Path,
    random_llm_dir_b: Path,
    trained_llm_dir: Callable[[str], Path],
) -> Path:
    """A models directory for the server: ``tiny-a``, ``tiny-b`` (random) and ``trained-<flavour>`` for every
    flavour, as symlinks into the cache."""
    root = tmp_path_factory.mktemp("models")
    targets = {"tiny-a": random_llm_dir, "tiny-b": random_llm_dir_b}
    targets.update({f"trained-{flavour}": trained_llm_dir(flavour) for flavour in FLAVOURS})
    for name, target in targets.items():
        (root / name).symlink_to(target, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def embedding_model_dir(model_cache_root: Path) -> Path:
    """A random-weight tiny Qwen3-Embedding (qwen3 with sentence-transformers' last-token pooling files)."""
    from tests.fixtures import embedding_models

    return embedding_models.cached_qwen3_embedding(root=model_cache_root)


@pytest.fixture(scope="session")
def bert_embedding_dir(model_cache_root: Path) -> Path:
    """A random-weight tiny BERT (mlx-embeddings' classes) with sentence-transformers' mean pooling files."""
    from tests.fixtures import embedding_models

    return embedding_models.cached_bert_embedding(root=model_cache_root)


@pytest.fixture(scope="session")
def embedding_models_root(
    tmp_path_factory: pytest.TempPathFactory, embedding_model_dir: Path, bert_embedding_dir: Path, random_llm_dir: Path
) -> Path:
    """A models directory with ``tiny-embed`` (Qwen3-Embedding-like), ``tiny-bert`` and ``tiny-a`` (a chat model)."""
    root = tmp_path_factory.mktemp("embedding-models")
    (root / "tiny-embed").symlink_to(embedding_model_dir, target_is_directory=True)
    (root / "tiny-bert").symlink_to(bert_embedding_dir, target_is_directory=True)
    (root / "tiny-a").symlink_to(random_llm_dir, target_is_directory=True)
    return root
