"""Config validation: bad values fail naming the key, unknown keys warn, MLX_MODEL_DIR overrides."""

import json
import logging

import pytest

from mlx_router.config.settings import ConfigError, load_settings, parse_settings


def test_defaults_are_safe():
    s = parse_settings({})
    assert s.server.ip == "127.0.0.1"
    assert s.defaults.stream is False
    assert s.server.api_keys == []


@pytest.mark.parametrize(
    "data, key",
    [
        ({"defaults": {"max_tokens": "many"}}, "defaults.max_tokens"),
        ({"defaults": {"max_tokens": 0}}, "defaults.max_tokens"),
        ({"defaults": {"streaming_format": "xml"}}, "defaults.streaming_format"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"models": {"m": {"temp": 5}}}, "models.m.temp"),
        ({"models": {"m": {"reasoning_response": "maybe"}}}, "models.m.reasoning_response"),
        (
            {"models": {"m": {"memory_pressure_max_tokens": {"high": -1}}}},
            "models.m.memory_pressure_max_tokens",
        ),
        (
            {"models": {"m": {"memory_pressure_max_tokens": {"extreme": 10}}}},
            "models.m.memory_pressure_max_tokens",
        ),
    ],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse_settings(data, "cfg.json")
    assert key in str(e.value)
    assert str(e.value).startswith("cfg.json: ")


def test_unknown_keys_warn_but_load(caplog):
    with caplog.at_level(logging.WARNING):
        s = parse_settings({"defaults": {"max_tokenz": 5, "_help": "comment"}, "extra": 1, "models": {"m": {"x": 1}}})
    text = caplog.text
    assert "defaults.max_tokenz" in text and "'extra'" in text and "models.m.x" in text
    assert "_help" not in text
    assert s.defaults.max_tokens == 4096


def test_env_overrides_model_directory(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"defaults": {"model_directory": "/nowhere"}}))
    s = load_settings(cfg, env={"MLX_MODEL_DIR": str(tmp_path)})
    assert s.defaults.model_directory == str(tmp_path)
    assert s.model_dirs() == [tmp_path]


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "none.json", env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(bad, env={})


def test_model_settings_lookup_by_short_name():
    s = parse_settings({"models": {"Qwen3-8B": {"max_tokens": 10}}})
    assert s.model_settings("mlx-community/Qwen3-8B").max_tokens == 10
    assert s.model_settings("other").max_tokens is None


def test_checked_in_config_is_valid_and_complete():
    from pathlib import Path

    from mlx_router.config.settings import DefaultsConfig, ServerConfig

    data = json.loads((Path(__file__).parents[2] / "config.json").read_text())
    s = parse_settings(data)
    assert s.unknown_keys() == []
    assert set(DefaultsConfig.model_fields) <= set(data["defaults"])
    assert set(ServerConfig.model_fields) <= set(data["server"])
