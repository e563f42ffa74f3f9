"""The vision path of the batch runner on tiny VLMs, without HTTP: a prompt with an image prefilled by mlx-vlm
and continued in the shared batch gives what mlx-vlm gives alone, whatever the chunking and company."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from mlx_lm.utils import load_tokenizer
from PIL import Image

from mlx_router.core.runner import ModelRunner, RunnerConfig
from mlx_router.engine.params import GenerationRequest, ImageInput, SamplingParams, TokenEvent
from mlx_router.errors import InvalidRequestError
from mlx_router.vision.adapter import load_vision
from mlx_router.vision.media import DecodedImage
from mlx_router.vision.spec import read_vision_spec

TEXT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe it<|im_end|>\n<|im_start|>assistant\n"
GEMMA_TEXT = "<bos><start_of_turn>user\n<start_of_image>Describe it<end_of_turn>\n<start_of_turn>model\n"
N = 10


def picture(seed: int, size: tuple[int, int] = (140, 100)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


class Setup:
    def __init__(self, path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        self.spec = read_vision_spec(path, config)
        assert self.spec is not None
        self.tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
        self.adapter, self.text_model, _ = load_vision(path, 1 << 28)
        self.path = path
        self.text = GEMMA_TEXT if config["model_type"] == "gemma3" else TEXT

    def image(self, seed: int) -> tuple[Image.Image, ImageInput]:
        pil = picture(seed)
        w, h = self.spec.target_size(*pil.size)
        pil = pil.resize((w, h), Image.BICUBIC)
        d = DecodedImage.from_pil(pil)
        return pil, ImageInput(d.digest, d.width, d.height, d.rgb)

    def prompt(self, image: ImageInput, text: str | None = None) -> list[int]:
        counts = [self.spec.token_count(image.width, image.height)]
        expanded = self.spec.expand_text(text or self.text, counts)
        return self.spec.expand(self.tokenizer.encode(expanded, add_special_tokens=False), counts)

    def runner(self, **config: object) -> ModelRunner:
        cfg = RunnerConfig(**{"prefix_cache_bytes": 0, **config})  # type: ignore[arg-type]
        return ModelRunner("m", self.text_model, self.tokenizer, cfg, vision=self.adapter)


def reference(path: Path, pil: Image.Image, text: str = TEXT) -> tuple[list[int], list[float], list[int]]:
    """mlx-vlm's own greedy generation: tokens, their logprobs, and the prompt ids its processor made."""
    from mlx_vlm import load
    from mlx_vlm.generate import generate_step
    from mlx_vlm.utils import prepare_inputs

    model, processor = load(str(path))
    token = getattr(model.config, "image_token_id", None) or model.config.image_token_index
    inputs = prepare_inputs(processor, images=[pil], prompts=[text], image_token_index=token)
    ids = inputs["input_ids"]
    tokens, logprobs = [], []
    extra = {"image_grid_thw": inputs["image_grid_thw"]} if "image_grid_thw" in inputs else {}
    steps = generate_step(
        ids, model, inputs["pixel_values"], inputs.get("attention_mask"), temperature=0.0, max_tokens=N, **extra
    )
    for token, lp in steps:
        tokens.append(int(token))
        logprobs.append(float(lp[int(token)]))
        if len(tokens) == N:
            break
    return tokens, logprobs, ids[0].tolist()


def run(runner: ModelRunner, requests: list[GenerationRequest]) -> list[list[TokenEvent]]:
    events: list[list[TokenEvent]] = []
    for req in requests:
        events.append([])
        runner.add(req, events[-1].append)
    for _ in range(2000):
        if all(e and e[-1].finish_reason for e in events):
            return events
        runner.step()
    raise AssertionError("the runner did not finish")


def vision_request(rid: str, prompt: list[int], image: ImageInput) -> GenerationRequest:
    return GenerationRequest(rid, "m", prompt, N, SamplingParams(), logprobs=0, ignore_eos=True, images=[image])


def tokens_and_logprobs(events: list[TokenEvent]) -> tuple[list[int], list[float]]:
    assert events[-1].error is None, events[-1].error
    return [t for e in events for t in e.tokens], [lp.logprob for e in events for lp in (e.logprobs or [])]


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3"])
def setup(request: pytest.FixtureRequest, tiny_vlm_dir) -> Setup:
    return Setup(tiny_vlm_dir(request.param))


@pytest.mark.parametrize(("chunk", "company"), [(512, 0), (16, 0), (16, 3)])
def test_image_prompt_matches_mlx_vlm(setup: Setup, chunk: int, company: int) -> None:
    pil, image = setup.image(1)
    ref_tokens, ref_logprobs, ref_ids = reference(setup.path, pil, setup.text)
    prompt = setup.prompt(image)
    assert prompt == ref_ids  # the HTTP side's expansion is the processor's
    texts = [
        GenerationRequest(f"t{k}", "m", setup.tokenizer.encode(f"text request {k}"), N, ignore_eos=True)
        for k in range(company)
    ]
    events = run(setup.runner(prefill_step_size=chunk), [vision_request("v", prompt, image), *texts])
    tokens, logprobs = tokens_and_logprobs(events[0])
    assert tokens == ref_tokens
    assert np.allclose(logprobs, ref_logprobs, atol=1e-4)
    assert events[0][0].prompt_tokens == len(prompt)


def test_text_requests_keep_their_solo_output_beside_an_image(setup: Setup) -> None:
    _, image = setup.image(2)
    prompts = [setup.tokenizer.encode(f"a text request number {k}") for k in range(3)]
    alone = [run(setup.runner(), [GenerationRequest("t", "m", p, N, logprobs=0, ignore_eos=True)])[0] for p in prompts]
    mixed = run(
        setup.runner(prefill_step_size=16),
        [
            vision_request("v", setup.prompt(image), image),
            *(GenerationRequest(f"t{k}", "m", p, N, logprobs=0, ignore_eos=True) for k, p in enumerate(prompts)),
        ],
    )
    for solo, together in zip(alone, mixed[1:], strict=True):
        a_tokens, a_lp = tokens_and_logprobs(solo)
        b_tokens, b_lp = tokens_and_logprobs(together)
        assert a_tokens == b_tokens
        assert np.allclose(a_lp, b_lp, atol=1e-4)


def test_second_turn_reuses_the_image_prefix_and_another_image_does_not(setup: Setup) -> None:
    _, image = setup.image(3)
    _, other = setup.image(4)
    assert image.width == other.width and image.digest != other.digest
    runner = setup.runner(prefix_cache_bytes=1 << 26, prefix_min_tokens=4)
    first = setup.prompt(image)
    (turn1,) = run(runner, [vision_request("a", first, image)])
    reply, _ = tokens_and_logprobs(turn1)
    follow = setup.tokenizer.encode("\nAnd now?\n", add_special_tokens=False)
    second = first + reply + follow
    misses = setup.adapter.features.misses
    (turn2,) = run(runner, [vision_request("b", second, image)])
    assert turn2[0].cached_tokens >= len(first)  # the image and the whole first turn came from the cache
    assert setup.adapter.features.misses == misses  # the image was not encoded again
    # the same conversation about another image of the same size: nothing past the image's start is reused
    start = first.index(setup.spec.image_token_id)
    (other_turn,) = run(runner, [vision_request("c", second, other)])
    assert other_turn[0].cached_tokens <= start
    fresh = run(setup.runner(), [vision_request("d", second, other)])[0]
    assert tokens_and_logprobs(other_turn)[0] == tokens_and_logprobs(fresh)[0]
    assert np.allclose(tokens_and_logprobs(other_turn)[1], tokens_and_logprobs(fresh)[1], atol=1e-4)


def test_a_prompt_whose_image_tokens_do_not_match_its_images_fails_alone(setup: Setup) -> None:
    _, image = setup.image(5)
    prompt = setup.prompt(image)
    runner = setup.runner()
    text_events: list[TokenEvent] = []
    runner.add(GenerationRequest("t", "m", setup.tokenizer.encode("hello"), N, ignore_eos=True), text_events.append)
    two_images = dataclasses.replace(vision_request("v", prompt, image), images=[image, image])
    with pytest.raises(InvalidRequestError, match="images"):
        runner.add(two_images, lambda e: None)
    for _ in range(200):
        if text_events and text_events[-1].finish_reason:
            break
        runner.step()
    assert text_events[-1].finish_reason == "length"


def test_cancel_while_the_image_is_read_frees_it_and_others_go_on(setup: Setup) -> None:
    _, image = setup.image(6)
    runner = setup.runner(prefill_step_size=8)
    vision_events: list[TokenEvent] = []
    text_events: list[TokenEvent] = []
    runner.add(vision_request("v", setup.prompt(image), image), vision_events.append)
    runner.add(GenerationRequest("t", "m", setup.tokenizer.encode("hello"), N, ignore_eos=True), text_events.append)
    runner.step()
    runner.step()  # positions, then the image through the tower: the prompt is still being read
    assert not vision_events
    runner.cancel("v")
    assert vision_events[-1].finish_reason == "cancelled"
    for _ in range(200):
        if text_events and text_events[-1].finish_reason:
            break
        runner.step()
    assert text_events[-1].finish_reason == "length"
    assert not runner.has_work() and runner.kv_bytes() == setup.adapter.features.nbytes  # only the image kept


def test_memory_of_an_image_prompt_is_counted_while_read_and_not_kept_twice_after(setup: Setup) -> None:
    _, image = setup.image(7)
    runner = setup.runner(prefill_step_size=4)
    events: list[TokenEvent] = []
    runner.add(vision_request("v", setup.prompt(image), image), events.append)
    seq = runner._reading[0]
    for _ in range(4):  # positions, the image, then two chunks of the prompt
        runner.step()
    assert seq.cache_nbytes() > 0 and runner.kv_bytes() >= seq.cache_nbytes()
    for _ in range(200):
        if not runner._reading:
            break
        runner.step()
    assert seq.cache_nbytes() == 0  # handed to the batch, which merged its own copy
