"""Which folders discovery finds as embedding models, how they pool, and what `models.<id>.embedding` changes."""

from __future__ import annotations

import json
from pathlib import Path

from mlx_router.config.discovery import ModelDiscovery
from mlx_router.config.settings import parse_settings
from tests.fixtures.embedding_models import MODULES, pooling_config
from tests.unit.test_discovery import make_model

QWEN3 = '{"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "max_position_embeddings": 4096}'


def with_pooling(folder: Path, mode: str, normalize: bool = True) -> Path:
    modules = MODULES if normalize else MODULES[:2]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config(mode, 64)))
    return folder


def scan(root: Path):
    return ModelDiscovery([root]).scan()


def test_qwen3_with_sentence_transformers_files_is_a_last_token_embedding_model(tmp_path: Path) -> None:
    with_pooling(make_model(tmp_path / "m" / "Qwen3-Embedding-0.6B", config=QWEN3), "lasttoken")
    make_model(tmp_path / "m" / "Qwen3-0.6B", config=QWEN3)
    models = scan(tmp_path / "m")
    spec = models["Qwen3-Embedding-0.6B"].embedding
    assert spec is not None
    assert (spec.pooling, spec.normalize, spec.encoder, spec.matryoshka) == ("last", True, False, True)
    assert models["Qwen3-0.6B"].embedding is None  # the same config without the files is a chat model


def test_mean_pooling_without_normalize_and_no_matryoshka_for_other_families(tmp_path: Path) -> None:
    with_pooling(make_model(tmp_path / "m" / "e", config='{"model_type": "qwen2"}'), "mean", normalize=False)
    spec = scan(tmp_path / "m")["e"].embedding
    assert spec is not None and (spec.pooling, spec.normalize, spec.matryoshka) == ("mean", False, False)


def test_bert_is_an_encoder_embedding_model_even_without_the_files(tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "bge-small", config='{"model_type": "bert"}')
    with_pooling(make_model(tmp_path / "m" / "e5", config='{"model_type": "xlm-roberta"}'), "cls")
    models = scan(tmp_path / "m")
    bge, e5 = models["bge-small"].embedding, models["e5"].embedding
    assert bge is not None and (bge.pooling, bge.encoder, bge.source) == ("mean", True, "model_type")
    assert e5 is not None and (e5.pooling, e5.encoder) == ("cls", True)


def test_a_pooling_this_server_does_not_do_skips_the_folder_with_its_reason(tmp_path: Path) -> None:
    with_pooling(make_model(tmp_path / "m" / "maxpool", config=QWEN3), "max")
    d = ModelDiscovery([tmp_path / "m"])
    assert d.scan() == {}
    reason = d.unservable("maxpool")
    assert reason is not None and "pooling_mode_max_tokens" in reason


def test_an_encoder_mlx_embeddings_lacks_is_skipped(tmp_path: Path) -> None:
    with_pooling(make_model(tmp_path / "m" / "x", config='{"model_type": "distilbert"}'), "mean")
    d = ModelDiscovery([tmp_path / "m"])
    assert d.scan() == {}
    assert "not supported" in (d.unservable("x") or "")


def test_config_key_forces_either_way(tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "plain-qwen3", config=QWEN3)
    with_pooling(make_model(tmp_path / "m" / "st-qwen3", config=QWEN3), "lasttoken")
    models = scan(tmp_path / "m")
    settings = parse_settings({"models": {"plain-qwen3": {"embedding": True}, "st-qwen3": {"embedding": False}}})
    forced = settings.embedding_spec(models["plain-qwen3"])
    assert forced is not None and (forced.pooling, forced.normalize, forced.matryoshka) == ("last", True, True)
    assert settings.embedding_spec(models["st-qwen3"]) is None
    assert parse_settings({}).embedding_spec(models["st-qwen3"]) == models["st-qwen3"].embedding
