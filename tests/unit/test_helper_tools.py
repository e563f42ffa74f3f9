"""helper_tools: the offline parts of the downloader, the converter (a real conversion of a tiny model) and
the memory report, on temporary model folders. Nothing here touches the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helper_tools import convert_to_mlx, memory_report, mlx_downloader
from mlx_router.config.discovery import ModelDiscovery
from mlx_router.config.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
MIB = 1024**2


def make_model(folder: Path, weight_bytes: int = MIB, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    shape = {
        "model_type": "llama",
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 64,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config if config is not None else shape))
    (folder / "model.safetensors").write_bytes(b"\0" * weight_bytes)
    return folder


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "server-config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("tool", ["mlx_downloader", "convert_to_mlx", "memory_report"])
def test_each_tool_runs_as_a_file_with_help(tool: str) -> None:
    """As users run them: `python helper_tools/<tool>.py --help`, from any folder."""
    done = subprocess.run(
        [sys.executable, str(REPO / "helper_tools" / f"{tool}.py"), "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {tool}.py")
    assert "--model-dir" in done.stdout


# -- mlx_downloader -----------------------------------------------------------------------------------------


def test_list_shows_installed_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    make_model(models / "mlx-community" / "Tiny-4bit", weight_bytes=3 * MIB)
    (models / "not-a-model").mkdir()
    config = write_config(tmp_path, {})
    assert mlx_downloader.main(["--list", "--config", str(config), "--model-dir", str(models), "--no-hf-cache"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"models in {models}:"
    assert len(out) == 2
    assert out[1].split()[:4] == ["mlx-community/Tiny-4bit", "0.00", "GB", "directory"]
    assert out[1].endswith(str((models / "mlx-community" / "Tiny-4bit").resolve()))


def test_list_includes_the_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = tmp_path / "hub"
    make_model(hub / "models--org--cached" / "snapshots" / "abc123")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    config = write_config(tmp_path, {"defaults": {"model_directory": str(tmp_path / "empty")}})
    assert mlx_downloader.main(["--list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "org/cached" in out and "hf_cache" in out
    assert mlx_downloader.main(["--list", "--config", str(config), "--no-hf-cache"]) == 0
    assert "no models found" in capsys.readouterr().out


def test_download_target_is_org_name_under_the_model_dir(tmp_path: Path) -> None:
    assert (
        mlx_downloader.target_dir(tmp_path, "mlx-community/Qwen3-8B-4bit")
        == tmp_path / "mlx-community" / "Qwen3-8B-4bit"
    )
    for bad in ("../escape", "/abs/path", "a/b/c", ""):
        with pytest.raises(ValueError):
            mlx_downloader.target_dir(tmp_path, bad)


def test_download_fetches_what_mlx_lm_loads() -> None:
    patterns = mlx_downloader.allow_patterns()
    for needed in ("*.json", "model*.safetensors", "tokenizer.model", "*.jinja"):
        assert needed in patterns


def test_download_refuses_when_offline_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = write_config(tmp_path, {})
    models = tmp_path / "models"
    assert mlx_downloader.main(["org/model", "--config", str(config), "--model-dir", str(models)]) == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert not models.exists()


def test_download_refuses_a_path_like_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {})
    args = ["../../etc", "--config", str(config), "--model-dir", str(tmp_path / "m")]
    assert mlx_downloader.main(args) == 1
    assert "not a hub repository id" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_download_needs_a_repo_or_list(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mlx_downloader.main(["--config", str(write_config(tmp_path, {}))])
    assert exit_info.value.code == 2


# -- memory_report ------------------------------------------------------------------------------------------


def test_memory_report_uses_the_servers_accounting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    make_model(models / "small", weight_bytes=MIB)
    make_model(models / "org" / "pinned", weight_bytes=MIB)
    config = write_config(
        tmp_path,
        {
            "defaults": {"safety_margin": 1.5, "memory_budget_gb": 1.0, "max_tokens": 1000},
            "models": {"org/pinned": {"required_memory_gb": 0.5, "max_tokens": 2000}},
        },
    )
    args = ["--config", str(config), "--model-dir", str(models), "--no-hf-cache"]
    assert memory_report.main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["budget_gb"] == 1.0  # memory_budget_gb wins over the machine's size
    small, pinned = sorted(report["models"], key=lambda m: m["id"], reverse=True)
    assert small["id"] == "small" and small["basis"] == "weights"
    assert small["estimate_gb"] == round(1.5 * MIB / 1024**3, 2)
    per_token = 2 * 4 * 2 * 16 * 2  # K and V x layers x KV heads x head size (64 / 4) x bf16
    assert small["kv_bytes_per_token"] == per_token
    assert small["kv_at_max_tokens_gb"] == round(per_token * 1000 / 1024**3, 2)
    assert small["requests_beside_it"] == (1024**3 - int(1.5 * MIB)) // (per_token * 1000)
    assert pinned["basis"] == "required_memory_gb" and pinned["estimate_gb"] == 0.75
    assert pinned["max_tokens"] == 2000
    assert report["fit_together"] == 2

    assert memory_report.main(args) == 0
    text = capsys.readouterr().out
    assert "Model budget: 1.00 GB (memory_budget_gb)" in text
    assert "Models that fit in the budget together: 2 (cache_size is 2;" in text


def test_memory_report_estimate_matches_the_manager(tmp_path: Path) -> None:
    """The report's estimate is the one MLXModelManager budgets with (a real manager, not a copy)."""
    from mlx_router.engine.manager import MLXModelManager

    make_model(tmp_path / "m" / "org" / "x", weight_bytes=5 * MIB)
    settings = load_settings(
        write_config(tmp_path, {"defaults": {"safety_margin": 1.3}, "models": {"x": {"required_memory_gb": 0.25}}})
    )
    found = ModelDiscovery([tmp_path / "m"])
    entry = found.resolve("org/x")
    assert entry is not None
    manager = MLXModelManager(settings, found, client=None, monitor=None)  # type: ignore[arg-type]
    assert memory_report.estimate_bytes(entry, settings) == manager.estimate_bytes(entry)


def test_memory_report_flags_models_bigger_than_the_budget(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, {"models": {"big": {"required_memory_gb": 8}}}))
    make_model(tmp_path / "m" / "big")
    entries = list(ModelDiscovery([tmp_path / "m"]).scan().values())
    machine = {
        "total_gb": 8.0,
        "available_gb": 6.0,
        "swap_percent": 0.0,
        "pressure": "normal",
        "device_memory_gb": None,
        "budget_gb": 4.0,
    }
    text = "\n".join(memory_report.render(memory_report.build_report(settings, entries, machine)))
    assert "Cannot load at all with this budget (503): big" in text
    assert "fit in the budget together: 0" in text


@pytest.mark.parametrize(
    ("sizes", "budget", "expected"),
    [
        ([], 10.0, 0),
        ([4.0, 4.0, 4.0], 10.0, 2),
        ([9.0, 1.0], 10.0, 2),
        ([11.0, 1.0], 10.0, 0),
        ([5.0], 5.0, 1),
    ],
)
def test_fit_together(sizes: list[float], budget: float, expected: int) -> None:
    assert memory_report.fit_together(sizes, budget) == expected


def test_kv_bytes_per_token_reads_nested_and_explicit_shapes() -> None:
    assert (
        memory_report.kv_bytes_per_token(
            {"text_config": {"num_hidden_layers": 2, "num_attention_heads": 8, "head_dim": 32}}
        )
        == 2 * 2 * 8 * 32 * 2
    )
    float32 = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "torch_dtype": "float32"}
    assert memory_report.kv_bytes_per_token(float32) == 2 * 2 * 4 * 16 * 4
    assert memory_report.kv_bytes_per_token({"model_type": "mamba"}) == 0


# -- convert_to_mlx -----------------------------------------------------------------------------------------


def test_convert_output_names(tmp_path: Path) -> None:
    src = tmp_path / "Qwen3-4B"
    assert convert_to_mlx.output_name(src, None, 4, quantize=True) == "Qwen3-4B-4bit"
    assert convert_to_mlx.output_name(src, None, 8, quantize=False) == "Qwen3-4B-mlx"
    assert convert_to_mlx.output_name(src, "me/q", 4, quantize=True) == "me/q"
    with pytest.raises(ValueError):
        convert_to_mlx.output_name(src, "../up", 4, quantize=True)


def test_convert_needs_a_local_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {})
    assert convert_to_mlx.main(["Qwen/Qwen3-4B", "--config", str(config), "--model-dir", str(tmp_path)]) == 2
    assert "does not download" in capsys.readouterr().err


def test_convert_quantizes_a_tiny_model_into_the_model_dir(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {})
    models = tmp_path / "models"
    args = [
        str(random_llm_dir),
        "--config",
        str(config),
        "--model-dir",
        str(models),
        "--name",
        "me/tiny-4bit",
        "--group-size",
        "32",
    ]
    assert convert_to_mlx.main(args) == 0
    assert "installed me/tiny-4bit" in capsys.readouterr().out
    entry = ModelDiscovery([models]).resolve("me/tiny-4bit")
    assert entry is not None
    written = json.loads((entry.path / "config.json").read_text())
    assert written["quantization"]["bits"] == 4 and written["quantization"]["group_size"] == 32
    assert convert_to_mlx.main(args) == 1  # never overwrites
    assert "exists already" in capsys.readouterr().err
