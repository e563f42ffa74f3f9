"""`mlx-router models list|download|link|tune` (mlx_router/tools/) on temporary folders and the tiny test models.

Nothing here reaches the network: downloads are refused offline or go through a fake `snapshot_download`, and
HF_ENDPOINT points at a closed local port in case anything tried.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helper_tools import memory_report, mlx_downloader
from mlx_router import cli as router_cli
from mlx_router.config.discovery import ModelDiscovery, ModelEntry
from mlx_router.config.settings import ModelSettings, Settings, load_settings
from mlx_router.demo import DEMO_MODEL_ID, VISION_MODEL_ID
from mlx_router.tools import tune

REPO = Path(__file__).resolve().parents[2]
MIB = 1024**2


def make_model(folder: Path, weight_bytes: int = MIB, config: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True)
    shape = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
    (folder / "config.json").write_text(json.dumps(config if config is not None else shape))
    (folder / "model.safetensors").write_bytes(b"\0" * weight_bytes)
    return folder


def linked_copy(source: Path, folder: Path, replace: dict[str, Any] | None = None) -> Path:
    """A model folder whose files are links to `source`'s, except the JSON files given in `replace`."""
    folder.mkdir(parents=True)
    for item in source.iterdir():
        if replace and item.name in replace:
            continue
        (folder / item.name).symlink_to(item)
    for name, content in (replace or {}).items():
        (folder / name).write_text(json.dumps(content))
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own (no hub cache, no LM Studio, no demo), run from a folder without config.json."""
    home = tmp_path / "home"
    home.mkdir()
    for name in (
        "MLX_MODEL_DIR",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
        "LMSTUDIO_MODELS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MLX_ROUTER_CACHE", str(tmp_path / "router-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never the real hub
    monkeypatch.chdir(tmp_path)
    return home


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "server-config.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def models(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = router_cli.main(["models", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def listed_ids(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    status, out, _ = models(["list", "--json", *argv], capsys)
    assert status == 0
    return [row["id"] for row in json.loads(out)]


# -- list: the models the server serves ----------------------------------------------------------------------


def test_list_shows_the_demo_models_the_server_falls_back_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bug the new user met: the demo was served, and the tools said "no models found" (they never looked
    in the demo's folder, <cache>/demo, which the server adds when the configured folder has no model)."""
    demo = tmp_path / "router-cache" / "demo"
    make_model(demo / DEMO_MODEL_ID)
    make_model(demo / VISION_MODEL_ID)
    config = write_config(tmp_path, {"defaults": {"model_directory": str(tmp_path / "empty")}})

    status, out, _ = models(["list", "--config", str(config)], capsys)
    assert status == 0
    assert f"none there, so the built-in demo models in {demo}" in out.splitlines()[0]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[3]) for r in rows] == [(DEMO_MODEL_ID, "demo"), (VISION_MODEL_ID, "demo")]

    assert mlx_downloader.main(["--list", "--config", str(config)]) == 0
    assert DEMO_MODEL_ID in capsys.readouterr().out
    assert memory_report.main(["--config", str(config), "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)["models"]] == [DEMO_MODEL_ID, VISION_MODEL_ID]

    make_model(tmp_path / "empty" / "real-model")  # a model of one's own: the server serves no demo then
    assert listed_ids(["--config", str(config)], capsys) == ["real-model"]


def test_list_without_models_or_demo_says_what_the_server_will_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = models(["list", "--model-dir", str(tmp_path / "none")], capsys)
    assert status == 0
    assert "no models found" in out
    assert "builds and serves its built-in demo models" in out


def test_list_honours_mlx_model_dir_config_and_model_dir(
    tmp_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = sorted(ModelDiscovery([models_root]).scan())
    assert "tiny-a" in served
    config = write_config(tmp_path, {"defaults": {"model_directory": str(models_root)}})
    assert listed_ids(["--config", str(config)], capsys) == served
    other = tmp_path / "other"
    make_model(other / "org" / "x")
    assert listed_ids(["--config", str(config), "--model-dir", str(other)], capsys) == ["org/x"]
    monkeypatch.setenv("MLX_MODEL_DIR", str(other))  # the server lets it override the config file
    assert load_settings(config).model_dirs() == [other]
    assert listed_ids(["--config", str(config)], capsys) == ["org/x"]
    monkeypatch.chdir(config.parent)
    config.rename(config.parent / "config.json")  # ./config.json is read without --config
    monkeypatch.delenv("MLX_MODEL_DIR")
    assert listed_ids([], capsys) == served


def test_list_includes_the_hub_cache_unless_asked_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = tmp_path / "hub"
    make_model(hub / "models--org--cached" / "snapshots" / "abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    config = write_config(tmp_path, {"defaults": {"model_directory": str(tmp_path / "m")}})
    make_model(tmp_path / "m" / "local")
    assert listed_ids(["--config", str(config)], capsys) == ["local", "org/cached"]
    assert listed_ids(["--config", str(config), "--no-hf-cache"], capsys) == ["local"]


def test_a_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"defaults": {"max_tokens": -1}})
    status, _, err = models(["list", "--config", str(config)], capsys)
    assert status == 2
    assert "defaults.max_tokens" in err


# -- download ------------------------------------------------------------------------------------------------


def test_download_offline_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "models"
    status, _, err = models(["download", "org/model", "--model-dir", str(target)], capsys)
    assert status == 1
    assert "HF_HUB_OFFLINE is set, so nothing can be downloaded" in err
    assert "env -u HF_HUB_OFFLINE mlx-router models download org/model" in err
    assert not target.exists()


def _fake_hub(monkeypatch: pytest.MonkeyPatch, fetch: Callable[[str, Path], object]) -> list[dict[str, Any]]:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        fetch(repo_id, Path(kwargs["local_dir"]))
        return str(kwargs["local_dir"])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_download_installs_where_the_server_looks(
    tmp_path: Path, random_llm_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_hub(monkeypatch, lambda repo, dest: shutil.copytree(random_llm_dir, dest, dirs_exist_ok=True))
    root = tmp_path / "models"
    config = write_config(tmp_path, {"defaults": {"model_directory": str(root)}})
    status, out, _ = models(["download", "mlx-community/Tiny-4bit", "--config", str(config)], capsys)
    assert status == 0, out
    assert calls[0]["repo_id"] == "mlx-community/Tiny-4bit"
    assert calls[0]["local_dir"] == root / "mlx-community" / "Tiny-4bit"
    assert "model*.safetensors" in calls[0]["allow_patterns"]
    assert "installed mlx-community/Tiny-4bit" in out and "note:" not in out
    assert listed_ids(["--config", str(config)], capsys) == ["mlx-community/Tiny-4bit"]


def test_download_of_a_repo_without_mlx_weights_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_hub(monkeypatch, lambda repo, dest: (dest / "config.json").write_text("{}"))
    status, _, err = models(["download", "org/gguf-only", "--model-dir", str(tmp_path / "m")], capsys)
    assert status == 1
    assert "holds no loadable model" in err

    def unreachable(repo: str, dest: Path) -> None:
        raise OSError("connection refused")

    _fake_hub(monkeypatch, unreachable)
    status, _, err = models(["download", "org/other", "--model-dir", str(tmp_path / "n")], capsys)
    assert status == 1
    assert "the download failed: connection refused" in err
    assert not (tmp_path / "n").exists()  # no empty folders left behind


# -- link: LM Studio -----------------------------------------------------------------------------------------


def lmstudio_tree(root: Path, source: Path) -> Path:
    """An LM Studio folder: two MLX models (links to `source`'s files) and a GGUF one."""
    linked_copy(source, root / "mlx-community" / "Tiny-A-4bit")
    linked_copy(source, root / "lmstudio-community" / "Tiny-B-MLX")
    gguf = root / "lmstudio-community" / "Tiny-GGUF"
    gguf.mkdir(parents=True)
    (gguf / "tiny-Q4_K_M.gguf").write_bytes(b"GGUF")
    return root


def snapshot(folder: Path) -> list[tuple[str, str]]:
    """Every entry under `folder` with what it is (links are not followed)."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            kind = f"link:{os.readlink(p)}" if p.is_symlink() else ("dir" if p.is_dir() else "file")
            rows.append((str(p.relative_to(folder)), kind))
    return sorted(rows)


def test_link_from_lmstudio_dry_run_then_links(
    tmp_path: Path, isolated: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = lmstudio_tree(isolated / ".lmstudio" / "models", random_llm_dir)  # found where LM Studio keeps them
    root = tmp_path / "models"
    config = write_config(tmp_path, {"defaults": {"model_directory": str(root)}})
    before = snapshot(lms)

    status, out, _ = models(["link", "from-lmstudio", "--config", str(config), "--dry-run"], capsys)
    assert status == 0
    assert f"would link {root / 'mlx-community' / 'Tiny-A-4bit'} -> {lms / 'mlx-community' / 'Tiny-A-4bit'}" in out
    assert "skip lmstudio-community/Tiny-GGUF: a GGUF model" in out
    assert "2 link(s) to create; nothing copied" in out
    assert not root.exists() and snapshot(lms) == before

    status, out, _ = models(["link", "from-lmstudio", "--config", str(config)], capsys)
    assert status == 0
    link = root / "mlx-community" / "Tiny-A-4bit"
    assert link.is_symlink() and os.readlink(link) == str(lms / "mlx-community" / "Tiny-A-4bit")
    assert snapshot(lms) == before  # LM Studio's side untouched
    assert listed_ids(["--config", str(config)], capsys) == [
        "lmstudio-community/Tiny-B-MLX",
        "mlx-community/Tiny-A-4bit",
    ]

    status, out, _ = models(["link", "from-lmstudio", "--config", str(config)], capsys)
    assert status == 0
    assert out.count("linked already") == 2 and "0 link(s) created" in out


def test_link_never_replaces_what_is_there(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = lmstudio_tree(tmp_path / "lms", random_llm_dir)
    root = tmp_path / "models"
    mine = make_model(root / "mlx-community" / "Tiny-A-4bit", weight_bytes=1234)
    (root / "lmstudio-community").mkdir()
    (root / "lmstudio-community" / "Tiny-B-MLX").symlink_to(tmp_path / "elsewhere")
    before = snapshot(root)
    status, out, _ = models(["link", "from-lmstudio", "--lmstudio-dir", str(lms), "--model-dir", str(root)], capsys)
    assert status == 1
    assert f"skip mlx-community/Tiny-A-4bit: {mine} exists; not replaced" in out
    assert "Tiny-B-MLX exists (a link to" in out
    assert snapshot(root) == before
    assert (mine / "model.safetensors").stat().st_size == 1234


def test_link_to_lmstudio_links_served_models_and_not_its_own_back(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = lmstudio_tree(tmp_path / "lms", random_llm_dir)
    root = tmp_path / "models"
    linked_copy(random_llm_dir, root / "org" / "mine")
    linked_copy(random_llm_dir, root / "flat-model")
    (root / "mlx-community").mkdir()
    (root / "mlx-community" / "Tiny-A-4bit").symlink_to(lms / "mlx-community" / "Tiny-A-4bit")  # from LM Studio
    args = ["link", "to-lmstudio", "--lmstudio-dir", str(lms), "--model-dir", str(root)]

    status, out, _ = models([*args, "--dry-run"], capsys)
    assert status == 0
    assert "skip mlx-community/Tiny-A-4bit: it is in LM Studio's folder already" in out
    assert not (lms / "org").exists()

    status, out, _ = models(args, capsys)
    assert status == 0, out
    assert os.readlink(lms / "org" / "mine") == str((root / "org" / "mine").resolve())
    assert os.readlink(lms / "mlx-router" / "flat-model") == str((root / "flat-model").resolve())
    assert not (lms / "mlx-community" / "Tiny-A-4bit").is_symlink()  # LM Studio's own folder, as it was
    # and back: the links LM Studio now holds are mlx-router's own models, not linked again
    status, out, _ = models(["link", "from-lmstudio", "--lmstudio-dir", str(lms), "--model-dir", str(root)], capsys)
    assert status == 0
    assert "skip org/mine: a link to mlx-router's own model folder" in out


def test_link_only_named_models_and_unknown_names_fail(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = lmstudio_tree(tmp_path / "lms", random_llm_dir)
    root = tmp_path / "models"
    args = ["link", "from-lmstudio", "mlx-community/Tiny-A-4bit", "no/such"]
    status, out, _ = models([*args, "--lmstudio-dir", str(lms), "--model-dir", str(root)], capsys)
    assert status == 1
    assert "skip no/such: no such model" in out
    assert (root / "mlx-community" / "Tiny-A-4bit").is_symlink()
    assert not (root / "lmstudio-community").exists()


def test_link_to_lmstudio_leaves_the_demo_models_out_unless_named(
    tmp_path: Path, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_model(tmp_path / "router-cache" / "demo" / DEMO_MODEL_ID)
    lms = isolated / ".cache" / "lm-studio" / "models"  # LM Studio before 0.3
    lms.mkdir(parents=True)
    args = ["link", "to-lmstudio", "--model-dir", str(tmp_path / "empty")]
    status, out, _ = models(args, capsys)
    assert status == 0
    assert "only the built-in demo models are served" in out and not any(lms.iterdir())
    status, out, _ = models(["link", "to-lmstudio", DEMO_MODEL_ID, "--model-dir", str(tmp_path / "empty")], capsys)
    assert status == 0
    assert (lms / "mlx-router" / DEMO_MODEL_ID).is_symlink()


def test_link_without_lmstudio_says_how_to_name_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = models(["link", "from-lmstudio", "--model-dir", str(tmp_path / "m")], capsys)
    assert status == 2
    assert "LM Studio's model folder was not found" in err and "--lmstudio-dir" in err


# -- tune ----------------------------------------------------------------------------------------------------

GENERATION = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": [4002, 4000]}


def test_tune_writes_an_entry_the_server_accepts(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    linked_copy(random_llm_dir, root / "org" / "tiny", {"generation_config.json": GENERATION})
    config = write_config(
        tmp_path,
        {"defaults": {"model_directory": str(root), "memory_budget_gb": 4}, "models": {"other": {"max_tokens": 9}}},
    )
    status, out, err = models(["tune", "org/tiny", "--config", str(config), "--write", "--json"], capsys)
    assert status == 0, err
    report = json.loads(out)
    written = json.loads(config.read_text())["models"]["org/tiny"]
    assert written == report["entry"]
    ModelSettings.model_validate(written)
    settings = load_settings(config)  # the whole file, as the server reads it
    assert settings.models["other"].max_tokens == 9
    ms = settings.model_settings("org/tiny")
    assert (ms.temp, ms.top_p, ms.top_k) == (0.6, 0.95, 20)
    assert ms.supports_tools is True and ms.supports_vision is False  # qwen tokenizer: hermes tool calls
    assert ms.max_tokens == 2048  # half the context of 4096: the tightest bound for a 1 MB model
    m = report["measurement"]
    assert m["backend"] == "mlx-lm"
    assert m["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # K and V x layers x KV heads x head size x float32
    assert m["decode_tokens"] == 32 and m["decode_seconds"] > 0 and m["prefill_seconds"] > 0
    weights = sum(p.stat().st_size for p in random_llm_dir.glob("*.safetensors"))
    assert 0.9 * weights <= m["weights_bytes"] <= 2 * weights
    assert ms.required_memory_gb == 0.01  # ~1.3 MB, rounded up to the key's hundredths of a GB
    assert "tool-call format: hermes" in report["notes"]


def test_tune_keeps_an_existing_entry_unless_forced(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    linked_copy(random_llm_dir, root / "tiny")
    mine = {"max_tokens": 100, "reasoning_response": "disable"}
    config = write_config(tmp_path, {"defaults": {"model_directory": str(root)}, "models": {"tiny": mine}})
    before = config.read_text()
    args = ["tune", "tiny", "--config", str(config), "--write", "--no-measure"]
    status, out, err = models(args, capsys)
    assert status == 1 and "has models.tiny already; --force" in err
    assert config.read_text() == before
    assert '"max_tokens": 2048' in out  # printed all the same
    status, out, err = models([*args, "--force"], capsys)
    assert status == 0, err
    entry = json.loads(config.read_text())["models"]["tiny"]
    assert entry["reasoning_response"] == "disable" and entry["max_tokens"] == 2048
    assert "required_memory_gb" not in entry  # not measured


def test_tune_printing_only_writes_nothing(
    tmp_path: Path, random_llm_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    linked_copy(random_llm_dir, tmp_path / "models" / "tiny")
    status, out, _ = models(["tune", "tiny", "--model-dir", str(tmp_path / "models"), "--decode-tokens", "4"], capsys)
    assert status == 0
    assert "measured with mlx-lm" in out and "decode: 4 tokens" in out
    entry = json.loads(out[out.index("{") :])["tiny"]
    ModelSettings.model_validate(entry)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize(("family", "path"), [("qwen2_vl", "handover"), ("gemma3", "handover"), ("idefics3", "solo")])
def test_tune_measures_vision_models_through_mlx_vlm(
    family: str, path: str, tmp_path: Path, tiny_vlm_dir: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    (root).mkdir()
    (root / "vlm").symlink_to(tiny_vlm_dir(family), target_is_directory=True)
    status, out, err = models(["tune", "vlm", "--model-dir", str(root), "--json", "--decode-tokens", "4"], capsys)
    assert status == 0, err
    report = json.loads(out)
    assert report["entry"]["supports_vision"] is True
    ModelSettings.model_validate(report["entry"])
    m = report["measurement"]
    assert m["backend"] == "mlx-vlm" and m["kv_bytes_per_token"] > 0
    assert m["image_error"] is None and m["image_tokens"] > 0 and m["image_seconds"] > 0
    assert f"vision model ({family}): images via {path}" in report["notes"]


def test_tune_of_a_model_no_loader_reads_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_model(tmp_path / "m" / "odd", config={"model_type": "no-such-architecture"})
    status, _, err = models(["tune", "odd", "--model-dir", str(tmp_path / "m")], capsys)
    assert status == 1
    # discovery skips it (no loader knows its model_type), and tune says why
    assert "odd is not served: model_type 'no-such-architecture' is not supported by mlx-lm" in err


def test_tune_names_the_models_it_knows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_model(tmp_path / "m" / "a")
    status, _, err = models(["tune", "b", "--model-dir", str(tmp_path / "m")], capsys)
    assert status == 1
    assert "no model 'b'; the server serves: a" in err


def _facts(config: dict[str, Any], generation: dict[str, Any], **kw: Any) -> tune.ModelFacts:
    entry = ModelEntry("m", Path("/nowhere"), int(0.5 * 1024**3), 0, "directory")
    args: dict[str, Any] = {
        "entry": entry,
        "config": config,
        "generation": generation,
        "context_tokens": tune.context_tokens(config),
        "tool_format": None,
        "reasoning_format": None,
        "vision_path": None,
    }
    args.update(kw)
    return tune.ModelFacts(**args)


class _Measured:
    def __init__(self, weights: int, kv: int, decode_tps: float) -> None:
        self.weights_bytes, self.kv_bytes_per_token, self.decode_tokens_per_s = weights, kv, decode_tps


GB = 1024**3
SHAPE = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128}


@pytest.mark.parametrize(
    ("config", "facts", "measured", "budget_gb", "expected", "reason"),
    [
        ({**SHAPE, "max_position_embeddings": 131072}, {}, _Measured(4 * GB, 131072, 50.0), 64, 4096, "a full answer"),
        (
            {**SHAPE, "max_position_embeddings": 131072},
            {"reasoning_format": "think"},
            _Measured(4 * GB, 131072, 50.0),
            64,
            7424,  # 50 tok/s x 150 s = 7500, rounded down to 256s
            "150 s at 50.0 tok/s",
        ),
        ({**SHAPE, "max_position_embeddings": 2048}, {}, None, 64, 1024, "half the context"),
        # 1.2 GB beside a 4 GB model (x1.2): a quarter of it holds 1228 tokens of prompt and as many of output
        # at 128 kB a token; rounded down to 1024
        ({**SHAPE, "max_position_embeddings": 131072}, {}, _Measured(4 * GB, 131072, 500.0), 6.0, 1024, "KV of prompt"),
        ({"max_position_embeddings": 100}, {}, None, 64, 50, "half the context"),
    ],
)
def test_max_tokens_follows_the_tightest_bound(
    config: dict[str, Any],
    facts: dict[str, Any],
    measured: _Measured | None,
    budget_gb: float,
    expected: int,
    reason: str,
) -> None:
    tuning = tune.recommend(_facts(config, {}, **facts), measured, Settings(), int(budget_gb * GB))
    assert tuning.entry["max_tokens"] == expected
    assert reason in tuning.notes[0]
    ModelSettings.model_validate(tuning.entry)


@pytest.mark.parametrize(
    ("generation", "expected", "note"),
    [
        (
            {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0},
            {"temp": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0},
            "generation_config",
        ),
        ({"do_sample": False, "temperature": 0.9}, {"temp": 0.0}, "do_sample is false"),
        (
            {"temperature": 3.5, "repetition_penalty": 1.05},
            {"repetition_penalty": 1.05},
            "temperature 3.5 is out of range",
        ),
        ({"max_length": 20}, {}, "sets no sampling defaults"),
        ({}, {}, "no generation_config.json"),
    ],
)
def test_sampling_defaults_come_from_generation_config(
    generation: dict[str, Any], expected: dict[str, Any], note: str
) -> None:
    values, notes = tune.sampling_defaults(generation)
    assert values == expected
    assert any(note in n for n in notes)
    ModelSettings.model_validate(values)


def test_recommend_without_a_tool_format_or_vision_says_so() -> None:
    facts = _facts({}, {}, entry=ModelEntry("m", Path("/x"), 10, 0, "directory", vision="mllama"))
    tuning = tune.recommend(facts, None, Settings(), 8 * GB)
    assert tuning.entry["supports_tools"] is False and tuning.entry["supports_vision"] is False
    assert "tool-call format: none detected" in tuning.notes
    assert "vision model (mllama): mlx-vlm has no such family: text only" in tuning.notes


def test_write_entry_creates_a_config_and_refuses_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.json"
    assert tune.write_entry(path, "org/m", {"max_tokens": 512}, force=False) is False
    assert load_settings(path).models["org/m"].max_tokens == 512
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(tune.TuneError, match="not valid JSON"):
        tune.write_entry(broken, "m", {"max_tokens": 1}, force=False)
    assert broken.read_text() == "{not json"
    with pytest.raises(tune.TuneError, match="max_tokens"):
        tune.write_entry(path, "x", {"max_tokens": 0}, force=False)  # what the server would refuse is not written
    assert "x" not in json.loads(path.read_text())["models"]


# -- the helper_tools files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("tool", "words"), [("lmstudio_linker", "from-lmstudio"), ("model_tuner", "--write")])
def test_new_helper_tools_run_as_files(tool: str, words: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "helper_tools" / f"{tool}.py"), "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {tool}.py")
    assert words in done.stdout and "--model-dir" in done.stdout and "--config" in done.stdout
