"""The built-in demo models: built once, offline, into their cache folder; the text demo answers the README's chats
exactly, the vision demo names the colour of the README's images and PDF page (and of others it never saw)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlx_router.demo import (
    DEMO_MODEL_ID,
    VISION_MODEL_ID,
    demo_chats,
    demo_model_dir,
    ensure_demo_model,
    ensure_demo_vision_model,
    store,
)
from mlx_router.demo import chats as demo
from mlx_router.demo import vision_chats as vision
from mlx_router.demo.store import (
    CACHE_ENV,
    MARKER_FILE,
    default_cache_dir,
    demo_definition,
    read_marker,
    vision_definition,
)
from mlx_router.parsing.pipeline import OutputPipeline
from mlx_router.parsing.registry import (
    detect_reasoning_parser,
    detect_tool_parser,
    get_reasoning_parser,
    get_tool_parser,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """(demo model folder, build seconds), built into a fresh cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    start = time.perf_counter()
    path = ensure_demo_model(cache)
    return path, time.perf_counter() - start


def _load(path: Path) -> tuple[Any, Any]:
    from mlx_lm import load  # mlx is imported inside tests, never at collection

    model, tokenizer = load(str(path))[:2]
    return model, tokenizer


def _generate(model: Any, tokenizer: Any, chat: demo.DemoChat, sampler: Any = None) -> tuple[str, int, str]:
    from mlx_lm import stream_generate

    prompt = tokenizer.apply_chat_template(chat.messages, tools=chat.tools, add_generation_prompt=True)
    text, last = "", None
    for response in stream_generate(model, tokenizer, prompt, max_tokens=80, sampler=sampler):
        text += response.text
        last = response
    assert last is not None
    return text, last.token, str(last.finish_reason)


@pytest.mark.slow
def test_demo_model_answers_every_chat_exactly(built: tuple[Path, float]) -> None:
    path, seconds = built
    assert path.name == DEMO_MODEL_ID and path.parent.name == "demo"
    assert seconds < 60, f"first build took {seconds:.1f} s"
    model, tokenizer = _load(path)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for chat in demo_chats():
        assert _generate(model, tokenizer, chat) == (chat.completion, im_end, "stop"), chat.name


@pytest.mark.slow
def test_demo_model_answers_the_same_when_sampling(built: tuple[Path, float]) -> None:
    """The server samples at temperature 1 unless told otherwise: the README's answers must still come out."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = _load(built[0])
    for seed in range(3):
        mx.random.seed(seed)
        for chat in demo_chats():
            text, _, _ = _generate(model, tokenizer, chat, make_sampler(temp=1.0))
            assert text == chat.completion, (seed, chat.name)


@pytest.mark.slow
def test_demo_folder_says_it_is_a_demo_and_records_its_definition(built: tuple[Path, float]) -> None:
    path = built[0]
    config = json.loads((path / "config.json").read_text())
    assert config["_comment"] == demo.DEMO_CONFIG_COMMENT and "demo model" in config["_comment"]
    assert config["model_type"] == "llama" and config["hidden_size"] <= 128
    marker = read_marker(path)
    assert {k: marker[k] for k in demo_definition()} == demo_definition()
    assert marker["chats"] == [c.name for c in demo_chats()] and marker["confidence"] > 0.9999
    # the parent is added to the server's model dirs: nothing else in it may look like a model
    assert {p.name for p in path.parent.iterdir() if not p.name.startswith(".")} <= {DEMO_MODEL_ID, VISION_MODEL_ID}


@pytest.mark.slow
def test_second_call_returns_at_once_without_mlx(built: tuple[Path, float]) -> None:
    path = built[0]
    cache = path.parents[1]
    start = time.perf_counter()
    assert ensure_demo_model(cache) == path
    assert time.perf_counter() - start < 0.5
    # a fresh server process finds it without importing mlx (the model loads later, on its worker thread)
    code = (
        "import sys; from pathlib import Path; from mlx_router.demo import ensure_demo_model; "
        f"print(ensure_demo_model(Path({str(cache)!r}))); "
        "print(any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == [str(path), "False"]


@pytest.mark.slow
def test_server_detects_the_demo_formats_and_parses_its_answers(built: tuple[Path, float]) -> None:
    """What the README promises a client sees (content, reasoning, tool calls) is what the parsers make of
    the model's raw completions."""
    config = json.loads((built[0] / "tokenizer_config.json").read_text())
    vocab = json.loads((built[0] / "tokenizer.json").read_text())["model"]["vocab"].keys()
    vocab = set(vocab) | {t["content"] for t in config["added_tokens_decoder"].values()}
    tool_parser = detect_tool_parser(config["chat_template"], vocab)
    reasoning_parser = detect_reasoning_parser(config["chat_template"], vocab)
    assert (tool_parser, reasoning_parser) == ("hermes", "think")
    for chat in demo_chats():
        pipeline = OutputPipeline(get_reasoning_parser("think")(), get_tool_parser("hermes")())
        parsed = pipeline.parse(chat.completion)
        assert (parsed.content or None) == chat.content, chat.name
        assert (parsed.reasoning or "").strip() == (chat.reasoning or ""), chat.name
        assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == list(chat.tool_calls)


# --- the vision demo ---


@pytest.fixture(scope="module")
def built_vision(built: tuple[Path, float]) -> tuple[Path, float]:
    """(vision demo folder, build seconds), built beside the text demo, whose tokenizer it uses."""
    start = time.perf_counter()
    path = ensure_demo_vision_model(built[0].parents[1])
    return path, time.perf_counter() - start


def _as_served(path: Path) -> list[tuple[str, str, Any]]:
    """(colour, question, image as the model gets it) for the README's three inputs in every colour: a 64x64 PNG,
    a 640x480 JPEG and a one-page PDF of a 300x200 picture, through the server's own decoder and resize."""
    import base64
    import io

    from PIL import Image

    from mlx_router.vision.inputs import MediaDecoder
    from mlx_router.vision.limits import MediaLimits
    from mlx_router.vision.media import DecodedImage, resize
    from mlx_router.vision.spec import read_vision_spec

    spec = read_vision_spec(path, json.loads((path / "config.json").read_text()))
    assert spec is not None
    decoder = MediaDecoder(MediaLimits())
    out = []
    try:
        for colour in vision.COLOURS:
            for fmt, size in (("PNG", (64, 64)), ("JPEG", (640, 480)), ("PDF", (300, 200))):
                buf = io.BytesIO()
                Image.new("RGB", size, colour).save(buf, fmt)
                uri = f"data:{'application' if fmt == 'PDF' else 'image'}/{fmt.lower()};base64,"
                uri += base64.b64encode(buf.getvalue()).decode()
                if fmt == "PDF":
                    image = decoder.decode_file(uri, "page.pdf", decoder.new_budget(), True, False).pages[0]
                    question = vision.PAGE_QUESTION
                else:
                    decoded = decoder.decode_image_url(uri, decoder.new_budget())
                    assert isinstance(decoded, DecodedImage)
                    image, question = decoded, vision.IMAGE_QUESTION
                out.append((colour, question, resize(image, *spec.target_size(image.width, image.height)).to_pil()))
    finally:
        decoder.close()
    return out


@pytest.mark.slow
def test_vision_demo_names_the_colour_of_the_readme_inputs_when_sampling(built_vision: tuple[Path, float]) -> None:
    """At the server's default temperature of 1, through mlx-vlm's own generation (the server's path is run by
    tests/e2e/test_readme.py)."""
    import mlx.core as mx
    from mlx_vlm import generate, load

    path, seconds = built_vision
    assert seconds < 60, f"first build took {seconds:.1f} s"
    model, loaded = load(str(path))
    processor: Any = loaded
    for i, (colour, question, image) in enumerate(_as_served(path)):
        prompt = processor.tokenizer.apply_chat_template(
            vision.colour_messages(question), tokenize=False, add_generation_prompt=True
        )
        mx.random.seed(i)
        result = generate(model, processor, prompt, image=[image], max_tokens=8, temperature=1.0, verbose=False)
        assert result.text == vision.answer(colour), (colour, question, image.size)


@pytest.mark.slow
def test_vision_demo_folder_is_a_qwen2_vl_the_server_serves(
    built: tuple[Path, float], built_vision: tuple[Path, float]
) -> None:
    from mlx_router.vision.spec import read_vision_spec

    path = built_vision[0]
    assert path.name == VISION_MODEL_ID and path.parent == built[0].parent
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl" and config["_comment"] == vision.VISION_CONFIG_COMMENT
    spec = read_vision_spec(path, config)
    assert spec is not None and spec.token_count(*spec.target_size(640, 480)) == 6
    # the text demo's tokenizer: same ids, same template
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (path / name).read_bytes() == (built[0] / name).read_bytes()
    marker = read_marker(path)
    assert {k: marker[k] for k in vision_definition()} == vision_definition()
    assert marker["margin"] >= 0.99 * store.VisionRecipe().sharp_margin


def test_vision_training_covers_every_grid_the_server_makes() -> None:
    """Images of aspect ratios up to 9 (past that the grids are one token high) all become a trained grid."""
    from mlx_router.vision.spec import smart_resize

    trained = set(vision.TRAIN_GRIDS) | {(h, w) for w, h in vision.TRAIN_GRIDS}
    side = 28
    for w in range(8, 4000, 13):
        for h in range(8, 4000, 17):
            if max(w, h) / min(w, h) <= 9:
                hh, ww = smart_resize(h, w, side, 2 * side * 2 * side, store.VisionRecipe().max_pixels)
                assert (ww // side, hh // side) in trained, (w, h)
    rows = vision.training_rows(0)
    assert {r.colour for r in rows} == set(vision.COLOURS) >= {"red", "green", "blue", "yellow"}
    assert {r.question for r in rows} == set(vision.QUESTIONS)
    for colour in vision.COLOURS:  # every colour at every grid, upright or on its side
        grids = {r.grid for r in rows if r.colour == colour}
        assert {tuple(sorted(g)) for g in grids} == {tuple(sorted(g)) for g in vision.TRAIN_GRIDS}


def test_vision_definition_follows_the_text_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vision demo uses the text demo's tokenizer: a new text demo means a new vision demo."""
    before = vision_definition()
    assert before["model"] == VISION_MODEL_ID
    monkeypatch.setattr(store, "demo_definition", lambda: {**demo_definition(), "digest": "other"})
    assert vision_definition()["digest"] != before["digest"]


def test_vision_demo_is_built_after_the_text_demo_over_its_tokenizer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlx_router.demo import build, vision_build

    log = tmp_path / "builds.log"
    monkeypatch.setattr(build, "build_demo_model", _fake_build(str(log)))
    seen: list[Path] = []

    def fake_vision(out: Path, tokenizer_dir: Path) -> dict[str, Any]:
        seen.append(tokenizer_dir)
        out.mkdir(parents=True)
        return {"fake": "vision"}

    monkeypatch.setattr(vision_build, "build_vision_demo_model", fake_vision)
    path = ensure_demo_vision_model(tmp_path)
    assert path == tmp_path / "demo" / VISION_MODEL_ID and seen == [demo_model_dir(tmp_path)]
    assert read_marker(path)["fake"] == "vision" and len(log.read_text().split()) == 1
    assert ensure_demo_vision_model(tmp_path) == path and len(seen) == 1  # current: nothing rebuilt


def test_startup_serves_both_demos_and_the_text_one_if_the_vision_build_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlx_router.demo as package
    from mlx_router.config.settings import parse_settings
    from mlx_router.startup import prepare_models

    text_dir = tmp_path / "demo" / DEMO_MODEL_ID
    monkeypatch.setattr(package, "ensure_demo_model", lambda: text_dir)
    monkeypatch.setattr(package, "ensure_demo_vision_model", lambda: tmp_path / "demo" / VISION_MODEL_ID)
    config = {"defaults": {"model_directory": str(tmp_path / "none"), "scan_hf_cache": False}}
    settings = parse_settings(config)
    with caplog.at_level("INFO"):
        prepare_models(settings)
    assert settings.model_dirs()[-1] == text_dir.parent and VISION_MODEL_ID in caplog.text

    def broken() -> Path:
        raise RuntimeError("did not learn")

    monkeypatch.setattr(package, "ensure_demo_vision_model", broken)
    settings = parse_settings(config)
    caplog.clear()
    with caplog.at_level("INFO"):
        prepare_models(settings)
    assert settings.model_dirs()[-1] == text_dir.parent
    assert "could not build the vision demo model" in caplog.text and "did not learn" in caplog.text


def test_chats_are_the_readme_examples() -> None:
    chats = {c.name: c for c in demo_chats()}
    assert chats["capital"].messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert chats["capital"].completion == chats["capital_no_system"].completion == demo.CAPITAL_ANSWER
    assert demo.HAIKU.count("\n") == 2
    assert json.loads(demo.WEATHER_CALL.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")) == {
        "name": "get_weather",
        "arguments": {"location": "Paris"},
    }
    followup = chats["weather_answer"].messages
    assert followup[1]["content"] is None and followup[2]["content"] == demo.WEATHER_RESULT
    assert chats["reasoning"].completion == "<think>\n17 + 25 = 42.\n</think>\n\nThe answer is 42."
    tool = demo.demo_tools()[0]["function"]
    assert tool["name"] == "get_weather" and tool["parameters"]["required"] == ["location"]
    # fresh copies: a caller may mutate what it got
    chats["capital"].messages.clear()
    assert demo_chats()[0].messages


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert demo_model_dir() == tmp_path / "demo" / DEMO_MODEL_ID
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "mlx-router"


# --- the store, with a stand-in builder (the real one is exercised above) ---


def _fake_build(log: str, fail: bool = False) -> Any:
    def build(out: Path, recipe: Any = None) -> dict[str, Any]:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        time.sleep(0.3)
        if fail:
            raise RuntimeError("boom")
        return {"fake": True}

    return build


def _ensure_with_fake_build(cache: str, log: str) -> str:
    from mlx_router.demo import build

    build.build_demo_model = _fake_build(log)  # type: ignore[assignment]  # in a spawned child only
    return str(ensure_demo_model(Path(cache)))


def test_two_processes_build_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.starmap(_ensure_with_fake_build, [(str(tmp_path / "cache"), str(log))] * 2)
    assert paths[0] == paths[1] and len(log.read_text().split()) == 1
    assert read_marker(Path(paths[0]))["fake"] is True


def test_newer_definition_rebuilds_and_failures_leave_the_old_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlx_router.demo import build

    log = tmp_path / "builds.log"
    monkeypatch.setattr(build, "build_demo_model", _fake_build(str(log)))
    path = ensure_demo_model(tmp_path)
    (path.parent / ".build-123-dead").mkdir()  # left by a killed build
    marker = read_marker(path)
    (path / MARKER_FILE).write_text(json.dumps({**marker, "digest": "older"}))
    monkeypatch.setattr(build, "build_demo_model", _fake_build(str(log), fail=True))
    with pytest.raises(RuntimeError, match="boom"):
        ensure_demo_model(tmp_path)
    # the failed build left nothing behind (the stale one went too) and the old build is still there
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", DEMO_MODEL_ID]
    assert read_marker(path)["digest"] == "older"
    monkeypatch.setattr(build, "build_demo_model", _fake_build(str(log)))
    assert ensure_demo_model(tmp_path) == path and read_marker(path)["digest"] == demo_definition()["digest"]
    assert len(log.read_text().split()) == 3
