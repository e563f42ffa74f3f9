"""The test models: tokenizer flavours, chat templates, the disk cache, random and trained models."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import TemplateError

from tests.fixtures import cache
from tests.fixtures.cases import TOOLS, assistant_calls, cases_for, template_messages, tool_result, user
from tests.fixtures.tokenizers import FLAVOURS, get_flavour

ALL = list(FLAVOURS)


# mlx is imported inside the tests, not at collection (other tests may check what imports it)
def _models() -> Any:
    from tests.fixtures import models

    return models


def _load_model(path: Path) -> Any:
    from tests.fixtures.training import load_model

    return load_model(path)


def _hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _render(tok, messages, tools=None, **kwargs) -> str:
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **kwargs)


@pytest.mark.parametrize("flavour", ALL)
def test_flavour_tokens_are_single_tokens(flavour: str, model_cache_root: Path) -> None:
    tok = _hf_tokenizer(_models().cached_tokenizer(flavour, model_cache_root))
    spec = get_flavour(flavour)
    assert 2048 <= len(tok) <= 4096
    for token in spec.tokens:
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{token!r} -> {ids}"
        # control tokens vanish when specials are skipped, the others (<think>, <tool_call>...) stay visible
        shown = tok.decode(ids, skip_special_tokens=True)
        assert shown == ("" if token in spec.special else token)
        assert tok.decode(ids) == token
    assert tok.eos_token == spec.eos[0]
    # a token glued to text stays one token
    glued = tok.encode("x" + spec.eos[0] + "y", add_special_tokens=False)
    assert tok.convert_tokens_to_ids(spec.eos[0]) in glued


def _full_chat() -> list[dict]:
    return [
        {"role": "system", "content": "Be brief."},
        user("Weather in Paris and time in Tokyo?"),
        assistant_calls([("get_weather", {"location": "Paris"}), ("get_time", {"timezone": "Asia/Tokyo"})]),
        tool_result("call_1", '{"temperature": 21}'),
        tool_result("call_2", '{"time": "18:00"}'),
    ]


# what the generation prompt of a chat that ends with tool results looks like, and a marker of each part
EXPECTED = {
    "qwen": (
        '<tool_response>\n{"time": "18:00"}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
        ["<|im_start|>system\nBe brief.", '"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}'],
    ),
    "qwen3_coder": (
        "</tool_response>\n<|im_end|>\n<|im_start|>assistant\n",
        ["Be brief.", "<function=get_time>\n<parameter=timezone>\nAsia/Tokyo\n</parameter>"],
    ),
    "llama3": (
        '{"time": "18:00"}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
        [
            "Environment: ipython",
            '{"name": "get_time", "parameters": {"timezone": "Asia/Tokyo"}}',
            "<|start_header_id|>ipython<|end_header_id|>",
        ],
    ),
    "mistral": (
        '"call_id": "call_2"}[/TOOL_RESULTS]',
        [
            "[AVAILABLE_TOOLS][",
            "Be brief.\n\nWeather in Paris",
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}, "id": "call_1"}, ',
        ],
    ),
    "harmony": (
        "<|start|>functions.get_time to=assistant<|channel|>commentary<|message|>"
        '{"time": "18:00"}<|end|><|start|>assistant',
        [
            "# Instructions\n\nBe brief.",
            "type get_weather = (_: {\n// City name\nlocation: string,\n}) => any;",
            "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>",
        ],
    ),
    "deepseek_v3": (
        '<｜tool▁output▁begin｜>{"time": "18:00"}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>',
        [
            "<｜begin▁of▁sentence｜>Be brief.",
            "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
            'get_time\n```json\n{"timezone": "Asia/Tokyo"}\n```',
        ],
    ),
}


@pytest.mark.parametrize("flavour", ALL)
def test_template_renders_a_whole_tool_conversation(flavour: str, model_cache_root: Path) -> None:
    tok = _hf_tokenizer(_models().cached_tokenizer(flavour, model_cache_root))
    text = _render(tok, template_messages(_full_chat()), TOOLS)
    ending, markers = EXPECTED[flavour]
    assert text.endswith(ending), text[-200:]
    for marker in markers:
        assert marker in text
    assert "get_weather" in text and "Get the current time in a timezone" in text


@pytest.mark.parametrize("flavour", ALL)
def test_arguments_as_json_string_render_like_decoded(flavour: str, model_cache_root: Path) -> None:
    """Servers may pass tool-call arguments decoded or as the client's JSON string; prompts must not differ
    (qwen3_coder, like the real template, refuses the string form loudly instead)."""
    tok = _hf_tokenizer(_models().cached_tokenizer(flavour, model_cache_root))
    for case in cases_for(flavour):
        decoded = _render(tok, template_messages(case.messages), case.tools, **case.kwargs)
        if flavour == "qwen3_coder" and any(m.get("tool_calls") for m in case.messages):
            with pytest.raises(TemplateError, match="mapping"):
                _render(tok, case.messages, case.tools, **case.kwargs)
        else:
            assert _render(tok, case.messages, case.tools, **case.kwargs) == decoded, case.name


@pytest.mark.parametrize("flavour", ALL)
def test_null_optional_fields_render_like_absent(flavour: str, model_cache_root: Path) -> None:
    """A server that dumps its request model with every optional field (None) gets the trained prompt."""
    tok = _hf_tokenizer(_models().cached_tokenizer(flavour, model_cache_root))
    for case in cases_for(flavour):
        plain = template_messages(case.messages)
        padded = [
            {
                "name": None,
                "tool_calls": None,
                "tool_call_id": None,
                "reasoning_content": None,
                "content": None,
                **m,
            }
            for m in plain
        ]
        assert _render(tok, padded, case.tools, **case.kwargs) == _render(tok, plain, case.tools, **case.kwargs), (
            case.name
        )


def _generate(model, tok, prompt, max_tokens: int) -> tuple[str, int, str | None]:
    from mlx_lm import stream_generate

    text, last = "", None
    for response in stream_generate(model, tok, prompt, max_tokens=max_tokens):
        text += response.text
        last = response
    assert last is not None
    return text, last.token, last.finish_reason


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ALL)
def test_trained_model_reproduces_every_case(flavour: str, trained_llm_dir: Callable[[str], Path]) -> None:
    path = trained_llm_dir(flavour)
    config = json.loads((path / "config.json").read_text())
    generation = json.loads((path / "generation_config.json").read_text())
    model, tok = _load_model(path)
    end_ids = [tok.convert_tokens_to_ids(t) for t in get_flavour(flavour).eos]
    assert config["eos_token_id"] == generation["eos_token_id"] == end_ids
    assert config["hidden_size"] <= 96 and config["num_hidden_layers"] == 2
    for case in cases_for(flavour):
        prompt = tok.apply_chat_template(
            template_messages(case.messages), tools=case.tools, add_generation_prompt=True, **case.kwargs
        )
        text, end, reason = _generate(model, tok, prompt, max_tokens=200)
        assert (text, reason) == (case.completion, "stop"), case.name
        assert end == tok.convert_tokens_to_ids(case.eos or get_flavour(flavour).eos[0]), case.name


def test_random_models_differ_and_load(random_llm_dir: Path, random_llm_dir_b: Path) -> None:
    prompt = [{"role": "user", "content": "Tell me a story."}]
    outputs = []
    for path in (random_llm_dir, random_llm_dir_b):
        model, tok = _load_model(path)
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True)
        text, _, reason = _generate(model, tok, ids, max_tokens=12)
        # random models never stop by themselves and write plain printable text (no markup, no broken UTF-8)
        assert reason == "length" and text and all(c.isprintable() or c == "\n" for c in text)
        outputs.append(text)
    assert outputs[0] != outputs[1]


@pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"bits": 4}, {"arch": "qwen2", "seed": 3}])
def test_random_model_variants_load(options: dict, model_cache_root: Path) -> None:
    path = _models().cached_random_llm("qwen", root=model_cache_root, **options)
    model, tok = _load_model(path)
    config = json.loads((path / "config.json").read_text())
    assert ("quantization" in config) == ("bits" in options)
    assert config["model_type"] == options.get("arch", "llama")
    text, _, _ = _generate(model, tok, tok.encode("def main():"), max_tokens=4)
    assert isinstance(text, str)


def test_models_root_names_every_model(models_root: Path) -> None:
    names = sorted(p.name for p in models_root.iterdir())
    assert names == sorted(["tiny-a", "tiny-b", *(f"trained-{f}" for f in ALL)])
    for path in models_root.iterdir():
        assert (path / "config.json").exists() and (path / "tokenizer.json").exists()


def test_cache_builds_once_and_atomically(tmp_path: Path) -> None:
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "data.txt").write_text("ok")
        return {"answer": 42}

    first = cache.cached_build("demo", {"x": 1}, build, root=tmp_path)
    again = cache.cached_build("demo", {"x": 1}, build, root=tmp_path)
    other = cache.cached_build("demo", {"x": 2}, build, root=tmp_path)
    assert first == again != other and len(calls) == 2
    assert (first / "data.txt").read_text() == "ok" and cache.build_info(first)["answer"] == 42

    def broken(out: Path) -> None:
        (out / "half.txt").write_text("...")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.cached_build("demo", {"x": 3}, broken, root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".locks")) == sorted(
        [first.name, other.name]
    )


def test_cache_prunes_entries_of_old_sources(tmp_path: Path) -> None:
    current = cache.entry_name("demo", {"x": 1})
    old_stale, old_fresh = tmp_path / "demo-00000000-aaaaaaaaaaaa", tmp_path / "demo-00000000-bbbbbbbbbbbb"
    for entry in (tmp_path / current, old_stale, old_fresh):
        entry.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old_stale, (two_days_ago, two_days_ago))
    os.utime(tmp_path / current, (two_days_ago, two_days_ago))
    assert cache.prune_stale(tmp_path) == [old_stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current, old_fresh.name])


def _slow_build(root: str, marker: str) -> str:
    def build(out: Path) -> None:
        with open(marker, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        (out / "x").write_text("x")

    return str(cache.cached_build("race", {"n": 1}, build, root=Path(root)))


def test_cache_two_processes_build_once(tmp_path: Path) -> None:
    marker = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        paths = pool.starmap(_slow_build, [(str(tmp_path / "root"), str(marker))] * 2)
    assert paths[0] == paths[1]
    assert marker.read_text() == "built\n"


def test_cached_models_are_reused_quickly(trained_llm_dir: Callable[[str], Path], random_llm_dir: Path) -> None:
    trained_llm_dir("qwen")  # built (or found) once
    start = time.perf_counter()
    assert trained_llm_dir("qwen") == trained_llm_dir("qwen")
    assert _models().cached_random_llm("qwen", seed=0) == random_llm_dir
    assert time.perf_counter() - start < 2.0
    info = cache.build_info(trained_llm_dir("qwen"))
    assert info["kind"] == "trained" and info["train_steps"] > 0
    assert set(info["cases"]) == {c.name for c in cases_for("qwen")}
