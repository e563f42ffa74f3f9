"""The tiny vision models of ``tests.fixtures.vlm``: mlx-vlm loads and runs them offline, an image reaches the
logits, mlx-lm's text class reads the same dir and agrees with mlx-vlm's language model, and the processor
expands image placeholders exactly as ``image_token_count`` / ``expand_image_placeholders`` say (the facts the
HTTP side uses to count prompt tokens without mlx-vlm). The solo family (idefics3, SmolVLM) has no mlx-lm text
class: mlx-vlm's own ``prepare_inputs`` + ``generate_step`` serve it, with and without an image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3")
SOLO = "idefics3"  # served by mlx-vlm alone: mlx-lm has no text class for it
ALL_FAMILIES = (*FAMILIES, SOLO)
QWEN_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
# (what the chat template writes per image, the image tokens around and in the expanded placeholder)
PLACEHOLDER = {family: "".join(QWEN_TOKENS) for family in FAMILIES[:3]} | {"gemma3": "<start_of_image>"}
PLACEHOLDER[SOLO] = "<image>"
VISION_TOKENS = {family: QWEN_TOKENS for family in FAMILIES[:3]}
VISION_TOKENS["gemma3"] = ("<start_of_image>", "<image_soft_token>", "<end_of_image>")
VISION_TOKENS[SOLO] = ("<fake_token_around_image>", "<image>", "<global-img>")
IMAGE_TOKEN = {family: tokens[1] for family, tokens in VISION_TOKENS.items()}
# mlx-lm 0.32 maps qwen2_5_vl to its qwen2_vl class
TEXT_MODULE = {
    "qwen2_vl": "mlx_lm.models.qwen2_vl",
    "qwen2_5_vl": "mlx_lm.models.qwen2_vl",
    "qwen3_vl": "mlx_lm.models.qwen3_vl",
    "gemma3": "mlx_lm.models.gemma3",
}
# (width, height): tiny, odd aspect ratios, above the Qwen fixtures' max_pixels, a long strip
SIZES = [(1, 1), (64, 64), (100, 60), (60, 100), (224, 224), (300, 200), (1024, 1024), (2000, 100), (45, 45)]


def _load(path: Path) -> tuple[Any, Any]:
    from mlx_vlm import load

    model, processor = load(str(path))
    return model, processor


def _image(width: int, height: int, colour: tuple[int, int, int]) -> Any:
    from PIL import Image

    return Image.new("RGB", (width, height), colour)


def _prompt(processor: Any, n_images: int = 1, text: str = "What colour is this image?") -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    prompt: str = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def _inputs(processor: Any, prompt: str, images: list[Any]) -> dict[str, Any]:
    from mlx_vlm.utils import prepare_inputs

    return dict(prepare_inputs(processor, images=images, prompts=prompt))


def _last_logits(model: Any, processor: Any, prompt: str, images: list[Any]) -> Any:
    inputs = _inputs(processor, prompt, images)
    ids, pixels, mask = inputs.pop("input_ids"), inputs.pop("pixel_values"), inputs.pop("attention_mask")
    return model(ids, pixels, mask=mask, **inputs).logits[0, -1]


def _max_abs_diff(a: Any, b: Any) -> float:
    import mlx.core as mx

    return cast(float, mx.abs(a - b).max().item())


def _image_id(processor: Any, family: str) -> int:
    return int(processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[family]))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_chat_template_places_one_placeholder_per_image(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    from transformers import AutoTokenizer

    path = tiny_vlm_dir(family)
    tok: Any = AutoTokenizer.from_pretrained(path)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image"},
                {"type": "text", "text": "with"},
                {"type": "image"},
            ],
        }
    ]
    rendered: str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    placeholder = PLACEHOLDER[family]
    assert rendered.count(placeholder) == 2
    # text and images keep their order
    assert rendered.index("Compare") < rendered.index(placeholder) < rendered.index("with")
    assert rendered.rindex(placeholder) > rendered.index("with")
    for token in VISION_TOKENS[family]:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    assert (path / "chat_template.jinja").read_text(encoding="utf-8") == tok.chat_template
    assert (path / "preprocessor_config.json").exists() and (path / "config.json").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_mlx_vlm_generates_with_an_image_offline(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    import os

    from mlx_vlm import generate

    from tests.fixtures.vlm_tokens import expand_image_placeholders

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    path = tiny_vlm_dir(family)
    model, processor = _load(path)
    prompt = _prompt(processor)
    result = generate(model, processor, prompt, image=[_image(100, 60, (255, 0, 0))], max_tokens=4, verbose=False)
    # random fixtures never end by themselves and only print text
    assert result.generation_tokens == 4 and result.finish_reason == "length"
    assert result.text and all(c.isprintable() or c in " \n" for c in result.text)
    expanded = expand_image_placeholders(path, prompt, [(100, 60)])
    assert result.prompt_tokens == len(processor.tokenizer.encode(expanded, add_special_tokens=False))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_the_image_changes_the_logits(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    import mlx.core as mx

    model, processor = _load(tiny_vlm_dir(family))
    prompt = _prompt(processor)
    red = _last_logits(model, processor, prompt, [_image(64, 64, (255, 0, 0))])
    blue = _last_logits(model, processor, prompt, [_image(64, 64, (0, 0, 255))])
    red_again = _last_logits(model, processor, prompt, [_image(64, 64, (255, 0, 0))])
    assert _max_abs_diff(red, blue) > 0.1
    assert mx.array_equal(red, red_again)


@pytest.mark.parametrize("family", FAMILIES)
def test_mlx_lm_text_class_matches_the_vlm_language_model(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model

    path = tiny_vlm_dir(family)
    # a fresh load: mlx-vlm's Qwen2(.5)-VL language model keeps the last image prompt's positions for
    # calls without a cache (see /work/notes/vlm-fixtures.md)
    vlm_model, processor = _load(path)
    text_model, _ = load_model(path)
    assert type(text_model).__module__ == TEXT_MODULE[family]
    ids = processor.tokenizer.encode(_prompt(processor, n_images=0), add_special_tokens=False)
    ids = mx.array([ids])
    want = vlm_model.language_model(ids).logits
    got = text_model(ids)
    assert got.shape == want.shape
    assert _max_abs_diff(got, want) < 1e-5
    # the two share nothing by accident: the text class's weights are the checkpoint's text weights
    embed = text_model.language_model.model.embed_tokens.weight
    assert mx.array_equal(embed, vlm_model.language_model.model.embed_tokens.weight)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_count_is_the_processors(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    from tests.fixtures.vlm_tokens import image_token_count

    path = tiny_vlm_dir(family)
    _, processor = _load(path)
    prompt = _prompt(processor)
    image_id = _image_id(processor, family)
    counts = {}
    for width, height in SIZES:
        ids = processor(images=[_image(width, height, (9, 9, 9))], text=[prompt])["input_ids"][0].tolist()
        counts[(width, height)] = ids.count(image_id)
        assert ids.count(image_id) == image_token_count(path, width, height), (width, height)
    # Qwen counts follow the image's size, Gemma 3's do not
    assert (len(set(counts.values())) == 1) == (family == "gemma3")


@pytest.mark.parametrize("family", FAMILIES)
def test_expanded_placeholders_tokenize_to_the_processors_ids(family: str, tiny_vlm_dir: Callable[[str], Path]) -> None:
    from tests.fixtures.vlm_tokens import expand_image_placeholders

    path = tiny_vlm_dir(family)
    _, processor = _load(path)
    # images first in the turn: Gemma's "\n\n" then meets the template's own newline
    prompt = _prompt(processor, n_images=2, text="Which is bigger?")
    sizes = [(64, 64), (300, 200)]
    images = [_image(w, h, (200, 100, 0)) for w, h in sizes]
    want = processor(images=images, text=[prompt])["input_ids"][0].tolist()
    got = processor.tokenizer.encode(expand_image_placeholders(path, prompt, sizes), add_special_tokens=False)
    assert got == want
    # mlx-vlm's prepare_inputs (what its generate uses) gives the same ids for images of different sizes
    assert _inputs(processor, prompt, images)["input_ids"][0].tolist() == want


@pytest.mark.parametrize("family", FAMILIES)
def test_precomputed_image_features_go_in_as_cached_image_features(
    family: str, tiny_vlm_dir: Callable[[str], Path]
) -> None:
    import mlx.core as mx

    model, processor = _load(tiny_vlm_dir(family))
    inputs = _inputs(processor, _prompt(processor), [_image(100, 60, (0, 255, 0))])
    ids, pixels = inputs.pop("input_ids"), inputs.pop("pixel_values")
    grid = inputs.get("image_grid_thw")
    deepstack = None
    if family == "gemma3":
        hidden, _, _ = model.vision_tower(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
        features = model.multi_modal_projector(hidden)
    elif family == "qwen3_vl":
        features, deepstack = model.vision_tower(pixels, grid)
    else:
        features = model.vision_tower(pixels, grid, output_hidden_states=False)
    mask = inputs.pop("attention_mask")
    fresh = model.get_input_embeddings(ids, pixels, mask=mask, **inputs)
    cached = model.get_input_embeddings(ids, pixels, mask=mask, cached_image_features=features, **inputs)
    assert mx.array_equal(fresh.inputs_embeds, cached.inputs_embeds)
    if family == "qwen3_vl":
        # deepstack features come from the tower, and a cached call drops them: cache them too
        assert deepstack is not None and len(deepstack) == 1
        assert fresh.deepstack_visual_embeds is not None and cached.deepstack_visual_embeds is None
        assert mx.array_equal(fresh.deepstack_visual_embeds[0], deepstack[0])
    else:
        assert fresh.deepstack_visual_embeds is None


def test_trained_vlm_names_the_colour_of_images_it_never_saw(trained_vlm_dir: Path) -> None:
    from tests.fixtures import vlm_training
    from tests.fixtures.cache import build_info

    model, processor = _load(trained_vlm_dir)
    tok = processor.tokenizer
    info = build_info(trained_vlm_dir)
    # the prompt it was trained on, as a server renders OpenAI parts (image_url renders like image)
    image_url = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = vlm_training.colour_messages(image_url)
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(rendered) == info["prompt_ids"] == tok.encode(vlm_training.prompt_text(tok), add_special_tokens=False)
    answers = {}
    for colour in vlm_training.COLOURS:
        # a size, shade and noise seed outside the training set
        image = vlm_training.colour_image(colour, 80, 120, shade=-15, noise=8, seed=99)
        answers[colour] = vlm_training.answer(model, processor, image)
    assert answers == {colour: colour for colour in vlm_training.COLOURS}


# --- the solo family: SmolVLM (idefics3) ----------------------------------------------------------------------

IDEFICS3_IMAGE = "<fake_token_around_image><global-img>" + "<image>" * 16 + "<fake_token_around_image>"


def _greedy(model: Any, inputs: dict[str, Any], n: int) -> tuple[list[int], Any]:
    """``n`` greedy tokens from mlx-vlm's ``generate_step`` (the solo path) and the first step's logprobs."""
    from mlx_vlm.generate import generate_step

    inputs = dict(inputs)
    ids, pixels, mask = inputs.pop("input_ids"), inputs.pop("pixel_values", None), inputs.pop("attention_mask")
    tokens, first = [], None
    steps = generate_step(ids, model, pixels, mask, max_tokens=n, temperature=0.0, **inputs)
    for (token, logprobs), _ in zip(steps, range(n), strict=False):
        tokens.append(int(token))
        first = logprobs if first is None else first
    return tokens, first


def test_solo_family_has_no_mlx_lm_text_class(tiny_vlm_dir: Callable[[str], Path]) -> None:
    import json

    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    path = tiny_vlm_dir(SOLO)
    config = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="idefics3 not supported"):
        _get_classes(config)
    model, processor = _load(path)
    assert type(model).__module__ == "mlx_vlm.models.idefics3.idefics3"
    assert type(processor).__name__ == "Idefics3Processor"
    tok = processor.tokenizer
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *VISION_TOKENS[SOLO], "<end_of_utterance>"]
    ids = {name: tok.convert_tokens_to_ids(name) for name in names}
    assert ids == {
        "<|endoftext|>": 4000,
        "<|im_start|>": 4001,
        "<|im_end|>": 4002,
        "<fake_token_around_image>": 4003,
        "<image>": 4004,
        "<global-img>": 4006,
        "<end_of_utterance>": 4005,
    }
    assert config["image_token_id"] == processor.image_token_id == ids["<image>"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (4001, 4005, 4002)
    assert config["eos_token_id"] == [4005, 4000]
    # an untied head (mlx-vlm's Idefics3 always has one): its rows, not the embedding's, keep specials unemitted
    head = model.language_model.lm_head.weight
    assert not mx.any(head[mx.array(list(ids.values()))]).item()
    assert mx.any(head[tok.encode(" is", add_special_tokens=False)[0]]).item()
    assert mx.any(model.language_model.embed_tokens.weight[ids["<|im_start|>"]]).item()


def test_solo_family_prompt_and_image_expansion(tiny_vlm_dir: Callable[[str], Path]) -> None:
    path = tiny_vlm_dir(SOLO)
    _, processor = _load(path)
    tok = processor.tokenizer
    # the real SmolVLM template: "User:" glued to a leading image, "User: " before text; no space after "Assistant:"
    assert _prompt(processor, text="Hi") == "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:"
    text_first = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}]}]
    rendered = tok.apply_chat_template(text_first, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>User: Hi<image><end_of_utterance>\nAssistant:"
    # ... and, as the real one, it drops string content: a server must send content as a list of parts
    as_string = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert as_string == "<|im_start|>User: <end_of_utterance>\nAssistant:"
    # ... and image_url parts (only type "image" writes <image>)
    image_url = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with_url = [{"role": "user", "content": [image_url, {"type": "text", "text": "Hi"}]}]
    rendered = tok.apply_chat_template(with_url, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>User: Hi<end_of_utterance>\nAssistant:"
    # every image, whatever its size, becomes one fixed run of 16 <image> between <fake_token_around_image>s
    prompt = _prompt(processor, n_images=2, text="Which is bigger?")
    sizes = [(1, 1), (2000, 100)]
    inputs = _inputs(processor, prompt, [_image(w, h, (200, 100, 0)) for w, h in sizes])
    want = tok.encode(prompt.replace("<image>", IDEFICS3_IMAGE), add_special_tokens=False)
    assert inputs["input_ids"][0].tolist() == want
    assert want.count(4004) == 32 and want[0] == 4001
    assert inputs["pixel_values"].shape == (1, 2, 3, 64, 64)
    assert inputs["pixel_attention_mask"].shape == (1, 2, 64, 64)
    # the processor refuses a placeholder count that differs from the image count
    for n_placeholders, n_images in ((2, 1), (1, 2), (0, 1)):
        with pytest.raises(ValueError, match="number of <image> tokens"):
            _inputs(processor, _prompt(processor, n_images=n_placeholders), [_image(64, 64, (0, 0, 0))] * n_images)


def test_solo_family_generates_with_generate_step_offline(tiny_vlm_dir: Callable[[str], Path]) -> None:
    import os

    import mlx.core as mx

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, processor = _load(tiny_vlm_dir(SOLO))
    tok = processor.tokenizer
    prompt = _prompt(processor)
    red_tokens, red = _greedy(model, _inputs(processor, prompt, [_image(100, 60, (255, 0, 0))]), 4)
    _, blue = _greedy(model, _inputs(processor, prompt, [_image(100, 60, (0, 0, 255))]), 1)
    assert len(red_tokens) == 4
    assert _max_abs_diff(red, blue) > 0.1
    # random fixtures never end by themselves and only print text
    text = tok.decode(red_tokens)
    assert text and all(c.isprintable() or c in " \n" for c in text)
    # a text-only prompt: prepare_inputs gives no pixel_values and generate_step runs on the ids alone
    text_prompt = _prompt(processor, n_images=0, text="Hello there")
    inputs = _inputs(processor, text_prompt, [])
    assert "pixel_values" not in inputs
    assert inputs["input_ids"][0].tolist() == tok.encode(text_prompt, add_special_tokens=False)
    text_tokens, text_logprobs = _greedy(model, inputs, 4)
    assert len(text_tokens) == 4 and all(t not in tok.all_special_ids for t in text_tokens)
    want = model.language_model(inputs["input_ids"]).logits[0, -1]
    assert mx.array_equal(mx.argmax(text_logprobs, axis=-1), mx.argmax(want, axis=-1))
