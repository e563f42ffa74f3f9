"""Model discovery over temporary folders: layouts, the HF cache, broken folders, ids that look like paths."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from mlx_router.config import discovery
from mlx_router.config.discovery import ModelDiscovery, default_hf_cache_dirs, is_valid_model_id
from mlx_router.config.families import LoaderFamilies


def make_model(folder: Path, shards: tuple[int, ...] = (100,), config: str = '{"model_type": "llama"}') -> Path:
    """A model folder: config.json plus one *.safetensors file per shard size."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config)
    for index, size in enumerate(shards):
        (folder / f"model-{index:05d}.safetensors").write_bytes(b"\0" * size)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def make_hf_repo(cache: Path, repo: str, snapshots: dict[str, int], weight_size: int = 64) -> Path:
    """An HF hub cache repo: blobs/ plus snapshots/<hash>/ whose files are relative links into blobs/.

    `snapshots` maps a hash to its mtime; each snapshot gets its own weight blob of `weight_size` + its index.
    """
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / "cfg").write_text('{"model_type": "qwen2"}')
    for index, (name, mtime) in enumerate(snapshots.items()):
        blob = root / "blobs" / f"w{index}"
        blob.write_bytes(b"\0" * (weight_size + index))
        snap = root / "snapshots" / name
        snap.mkdir(parents=True)
        (snap / "config.json").symlink_to(Path("../../blobs/cfg"))
        (snap / "model.safetensors").symlink_to(Path(f"../../blobs/w{index}"))
        os.utime(snap, (mtime, mtime))
    (root / "refs").mkdir()
    return root


def test_flat_model(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "models" / "my-model", shards=(100, 250))
    os.utime(folder, (1_700_000_000, 1_700_000_000))
    models = ModelDiscovery([tmp_path / "models"]).scan()
    assert list(models) == ["my-model"]
    entry = models["my-model"]
    assert entry.path == folder.resolve()
    assert entry.size_bytes == 350
    assert entry.created == 1_700_000_000
    assert entry.source == "directory"


def test_nested_org_name(tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "mlx-community" / "Qwen3-0.6B-4bit")
    make_model(tmp_path / "m" / "mlx-community" / "Llama-3.2-1B")
    make_model(tmp_path / "m" / "plain")
    models = ModelDiscovery([tmp_path / "m"]).scan()
    assert sorted(models) == ["mlx-community/Llama-3.2-1B", "mlx-community/Qwen3-0.6B-4bit", "plain"]


def test_hf_cache_layout_picks_newest_snapshot(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = make_hf_repo(cache, "org/tiny", {"aaa111": 1_600_000_000, "bbb222": 1_700_000_000})
    (cache / "datasets--org--data").mkdir()  # not a model repo: ignored without fuss
    (cache / "version.txt").write_text("1")
    models = ModelDiscovery([], [cache]).scan()
    assert list(models) == ["org/tiny"]
    entry = models["org/tiny"]
    assert entry.path == (repo / "snapshots" / "bbb222").resolve()
    assert entry.size_bytes == 65  # the newest snapshot's blob, reached through the link
    assert entry.created == 1_700_000_000
    assert entry.source == "hf_cache"
    # the same layout inside a model dir is recognised too
    assert list(ModelDiscovery([cache]).scan()) == ["org/tiny"]


def test_hf_snapshot_with_missing_blob_falls_back_to_older(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = make_hf_repo(tmp_path, "org/tiny", {"old": 1_600_000_000, "new": 1_700_000_000})
    (repo / "blobs" / "w1").unlink()  # the newest snapshot's weights: a dangling link now
    caplog.set_level(logging.INFO, logger=discovery.__name__)
    entry = ModelDiscovery([], [tmp_path]).resolve("org/tiny")
    assert entry is not None and entry.path == (repo / "snapshots" / "old").resolve()
    (repo / "blobs" / "w0").unlink()
    assert ModelDiscovery([], [tmp_path]).resolve("org/tiny") is None
    assert "missing" in caplog.text


def broken_folders(root: Path) -> None:
    """One folder per way of not being a model, plus one good model."""
    make_model(root / "good")
    (root / "no-config").mkdir(parents=True)
    (root / "no-config" / "model.safetensors").write_bytes(b"x")
    make_model(root / "no-weights", shards=())
    make_model(root / "bad-json", config="{not json")
    make_model(root / "json-list", config="[1, 2]")
    make_model(root / "bin-only", shards=())
    (root / "bin-only" / "pytorch_model.bin").write_bytes(b"x")
    make_model(root / "dangling-weight", shards=())
    (root / "dangling-weight" / "model.safetensors").symlink_to(root / "nowhere.safetensors")
    (root / "dangling-folder").symlink_to(root / "missing-target")
    (root / "models--org--empty").mkdir()
    (root / "README.md").write_text("files next to models are fine")
    (root / ".hidden").mkdir()


def test_broken_folders_are_skipped_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken_folders(tmp_path)
    finder = ModelDiscovery([tmp_path, tmp_path / "not-there"])
    caplog.set_level(logging.INFO, logger=discovery.__name__)
    assert list(finder.scan()) == ["good"]
    first = [r.getMessage() for r in caplog.records]
    for name in (
        "no-config",
        "no-weights",
        "bad-json",
        "json-list",
        "bin-only",
        "dangling-weight",
        "dangling-folder",
        "models--org--empty",
        "not-there",
    ):
        assert sum(name in line for line in first) == 1, (name, first)
    assert not any("README" in line or ".hidden" in line for line in first)
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    assert list(finder.scan()) == ["good"]
    assert finder.resolve("bad-json") is None
    assert caplog.records == []  # nothing new to say on later scans


def test_unreadable_folder_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_model(tmp_path / "good")
    locked = make_model(tmp_path / "locked")
    make_model(tmp_path / "org-locked" / "inner")
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str] | str = ".") -> object:
        # the tests run as root, which chmod cannot lock out; refuse the way a locked folder would
        if Path(path) in (locked, tmp_path / "org-locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", scandir)
    caplog.set_level(logging.INFO, logger=discovery.__name__)
    assert list(ModelDiscovery([tmp_path]).scan()) == ["good"]
    assert "locked: folder is unreadable (Permission denied)" in caplog.text
    assert "org-locked: unreadable (Permission denied)" in caplog.text


def test_new_folder_appears_and_removed_one_goes(tmp_path: Path) -> None:
    make_model(tmp_path / "first")
    finder = ModelDiscovery([tmp_path])
    assert list(finder.scan()) == ["first"]
    make_model(tmp_path / "second")
    make_model(tmp_path / "org" / "third")
    assert sorted(finder.scan()) == ["first", "org/third", "second"]
    (tmp_path / "first" / "model-00000.safetensors").unlink()
    assert sorted(finder.scan()) == ["org/third", "second"]


def test_unchanged_folders_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_model(tmp_path / "m")
    calls: list[str] = []
    real = discovery._read_model_folder

    def counting(path: str, mtime: float, families: LoaderFamilies) -> discovery._Inspection:
        calls.append(path)
        return real(path, mtime, families)

    monkeypatch.setattr(discovery, "_read_model_folder", counting)
    finder = ModelDiscovery([tmp_path])
    finder.scan()
    finder.scan()
    assert calls == [str(folder)]
    (folder / "config.json").write_text("oops")  # edited in place: config.json's own stats change
    os.utime(folder / "config.json", (1_800_000_000, 1_800_000_000))
    assert finder.scan() == {}
    assert len(calls) == 2


@pytest.mark.parametrize(
    "bad_id",
    [
        "../x",
        "/etc",
        "/etc/passwd",
        "a/../../b",
        "a\\b",
        "models--x--y",
        "..",
        ".",
        "",
        "a//b",
        "a/",
        "/a",
        "a/b/c",
        "x\x00y",
        "org/..",
        "./m",
    ],
)
def test_path_like_ids_resolve_to_none(tmp_path: Path, bad_id: str) -> None:
    make_model(tmp_path / "models" / "m")
    make_model(tmp_path / "models" / "org" / "name")
    make_hf_repo(tmp_path / "models", "x/y", {"s": 1_700_000_000})
    make_model(tmp_path / "x")  # a model just outside the model dir: never reachable
    finder = ModelDiscovery([tmp_path / "models"])
    assert finder.resolve(bad_id) is None
    assert finder.resolve("m") is not None and finder.resolve("org/name") is not None
    assert finder.resolve("x/y") is not None


def test_valid_ids() -> None:
    assert is_valid_model_id("my-model")
    assert is_valid_model_id("mlx-community/Qwen3-0.6B-4bit")
    assert is_valid_model_id("a.b_c")
    assert not is_valid_model_id("a/b/c")


def test_symlinked_model_folder_is_allowed(tmp_path: Path) -> None:
    target = make_model(tmp_path / "elsewhere" / "big-model")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "linked").symlink_to(target)
    entry = ModelDiscovery([tmp_path / "models"]).resolve("linked")
    assert entry is not None and entry.path == target.resolve()


def test_first_dir_wins_on_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    one = make_model(tmp_path / "one" / "org" / "name")
    make_model(tmp_path / "two" / "org" / "name")
    make_hf_repo(tmp_path / "hub", "org/name", {"s": 1_700_000_000})
    make_hf_repo(tmp_path / "hub", "only/hub", {"s": 1_700_000_000})
    caplog.set_level(logging.INFO, logger=discovery.__name__)
    models = ModelDiscovery([tmp_path / "one", tmp_path / "two"], [tmp_path / "hub"]).scan()
    assert models["org/name"].path == one.resolve()
    assert models["org/name"].source == "directory"
    assert models["only/hub"].source == "hf_cache"
    assert caplog.text.count("duplicate id 'org/name'") == 2


def test_default_hf_cache_dirs(tmp_path: Path) -> None:
    hub_cache = tmp_path / "hub-cache"
    hf_home = tmp_path / "hf-home"
    home = tmp_path / "home"
    for folder in (hub_cache, hf_home / "hub", home / ".cache" / "huggingface" / "hub"):
        folder.mkdir(parents=True)
    env = {"HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(hf_home), "HOME": str(home)}
    assert default_hf_cache_dirs(env) == [hub_cache, hf_home / "hub", home / ".cache" / "huggingface" / "hub"]
    # only existing folders, each once
    env = {"HF_HUB_CACHE": str(hf_home / "hub"), "HF_HOME": str(hf_home), "HOME": str(tmp_path / "nohome")}
    assert default_hf_cache_dirs(env) == [hf_home / "hub"]


def test_config_json_written_as_model_dirs_see_it(tmp_path: Path) -> None:
    # a config.json that is valid JSON but huge or odd still counts only if it is an object
    make_model(tmp_path / "ok", config=json.dumps({"model_type": "llama", "n": list(range(1000))}))
    assert list(ModelDiscovery([tmp_path]).scan()) == ["ok"]


# -- model types no loader can build: decided here, never listed (they failed with a 500 when asked for) --------


def test_a_model_type_no_loader_knows_is_skipped_with_one_line_and_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "m"
    make_model(root / "good")
    make_model(root / "odd", config='{"model_type": "no_such_architecture"}')
    make_model(root / "untyped", config='{"hidden_size": 64}')
    make_model(root / "helper-module", config='{"model_type": "cache"}')  # mlx_lm/models/cache.py has no Model
    make_model(root / "odd-vision", config='{"model_type": "no_such_vlm", "vision_config": {}}')
    caplog.set_level(logging.INFO, logger=discovery.__name__)
    finder = ModelDiscovery([root])
    assert list(finder.scan()) == ["good"]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("odd:" in line and "'no_such_architecture' is not supported by mlx-lm" in line for line in lines) == 1
    assert finder.unservable("odd") == f"model_type 'no_such_architecture' is not supported by mlx-lm {_mlx_lm()}"
    assert finder.unservable("untyped") == "config.json has no model_type"
    assert finder.unservable("helper-module") is not None
    assert "known to neither mlx-lm" in (finder.unservable("odd-vision") or "")
    assert finder.unservable("good") is None and finder.unservable("absent") is None
    caplog.clear()
    assert list(finder.scan()) == ["good"] and caplog.records == []  # said once


def test_model_types_mlx_lm_remaps_or_mlx_vlm_serves_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "m"
    make_model(root / "mistral", config='{"model_type": "mistral"}')  # mlx-lm loads it as llama
    make_model(root / "solar", config='{"model_type": "solar_open"}')  # its module imports Model from another
    by_arch = {"model_type": "bailing_hybrid", "architectures": ["BailingMoeV3ForCausalLM"]}
    make_model(root / "by-arch", config=json.dumps(by_arch))
    # SmolVLM: mlx-lm has no idefics3, mlx-vlm has; as a vision model it is served by mlx-vlm alone
    make_model(root / "smolvlm", config='{"model_type": "idefics3", "vision_config": {"hidden_size": 32}}')
    make_model(root / "idefics-text", config='{"model_type": "idefics3"}')
    finder = ModelDiscovery([root])
    found = finder.scan()
    assert sorted(found) == ["by-arch", "mistral", "smolvlm", "solar"]
    assert found["smolvlm"].vision == "idefics3"
    assert "not supported by mlx-lm" in (finder.unservable("idefics-text") or "")


def test_an_unknown_loader_layout_refuses_nothing(tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "odd", config='{"model_type": "no_such_architecture"}')
    unknown = LoaderFamilies(None, {}, {}, "?")
    assert list(ModelDiscovery([tmp_path / "m"], families=unknown).scan()) == ["odd"]


def test_the_families_are_read_without_importing_mlx(tmp_path: Path) -> None:
    """Discovery runs in the HTTP process, which never imports mlx (nor mlx-lm or mlx-vlm, which would)."""
    import subprocess
    import sys

    make_model(tmp_path / "m" / "odd", config='{"model_type": "no_such_architecture"}')
    make_model(tmp_path / "m" / "vlm", config='{"model_type": "idefics3", "vision_config": {}}')
    code = (
        "import sys; from pathlib import Path; from mlx_router.config.discovery import ModelDiscovery; "
        f"print(sorted(ModelDiscovery([Path({str(tmp_path / 'm')!r})]).scan())); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'mlx_vlm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["['vlm']", "[]"]


def _mlx_lm() -> str:
    from importlib.metadata import version

    return version("mlx-lm")
