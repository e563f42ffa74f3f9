"""Images and PDFs through the chat API, in process, on a tiny Qwen2-VL and a text model: the answer is mlx-vlm's
own, streamed or not; images in tool results reach the model; PDFs become pages or text; a second turn about
the same image reuses it; a model without vision says so."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings
from tests.api.test_vision_runner import picture, reference
from tests.fixtures.pdfs import Page, build_pdf

CHAT = "/v1/chat/completions"
VLM = "tiny-vl"
N = 8


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def pdf_uri(pages: list[Page]) -> str:
    return "data:application/pdf;base64," + base64.b64encode(build_pdf(pages)).decode()


def image_part(image: Image.Image) -> dict:
    return {"type": "image_url", "image_url": {"url": data_uri(image), "detail": "auto"}}


def chat(model: str, messages: list[dict], **kw: object) -> dict:
    body = {"model": model, "messages": messages, "max_tokens": N, "temperature": 0, "ignore_eos": True}
    body.update(kw)
    return body


@pytest.fixture(scope="module")
def vlm_path(tiny_vlm_dir) -> Path:
    return tiny_vlm_dir("qwen2_vl")


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, vlm_path: Path, random_llm_dir: Path, tiny_vlm_dir
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("vision-models")
    (root / VLM).symlink_to(vlm_path, target_is_directory=True)
    (root / "tiny-gemma").symlink_to(tiny_vlm_dir("gemma3"), target_is_directory=True)
    (root / "tiny-vl-small").symlink_to(vlm_path, target_is_directory=True)
    (root / "tiny-a").symlink_to(random_llm_dir, target_is_directory=True)
    settings = parse_settings(
        {
            "defaults": {"model_directory": str(root), "scan_hf_cache": False, "max_tokens": 32, "cache_size": 4},
            "models": {"tiny-vl-small": {"vision_max_pixels": 3136}},
        }
    )
    with TestClient(create_app(settings)) as c:
        yield c


def rendered(path: Path, messages: list[dict]) -> str:
    """The prompt text the model's own template makes of `messages` (image parts as the template sees them)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def target(pil: Image.Image, path: Path) -> Image.Image:
    from mlx_router.vision.spec import read_vision_spec

    spec = read_vision_spec(path, json.loads((path / "config.json").read_text()))
    assert spec is not None
    size = spec.target_size(*pil.size)
    return pil if size == pil.size else pil.resize(size, Image.BICUBIC)


def test_models_say_which_take_images(client: TestClient) -> None:
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards[VLM]["supports_vision"] is True and cards["tiny-gemma"]["supports_vision"] is True
    assert cards["tiny-a"]["supports_vision"] is False


@pytest.mark.parametrize("model", [VLM, "tiny-gemma"])
def test_answer_equals_mlx_vlm_streamed_or_not(client: TestClient, model: str, tiny_vlm_dir) -> None:
    vlm_path = tiny_vlm_dir("qwen2_vl" if model == VLM else "gemma3")
    pil = picture(7)
    messages = [{"role": "user", "content": [image_part(pil), {"type": "text", "text": "Describe it"}]}]
    text = rendered(
        vlm_path, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it"}]}]
    )
    ref_tokens, ref_logprobs, ref_ids = reference(vlm_path, target(pil, vlm_path), text)
    ref_tokens, ref_logprobs = ref_tokens[:N], ref_logprobs[:N]

    r = client.post(CHAT, json=chat(model, messages, logprobs=True))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["prompt_tokens"] == len(ref_ids)  # image tokens counted
    got = [c["logprob"] for c in out["choices"][0]["logprobs"]["content"]]
    assert np.allclose(got, ref_logprobs, atol=1e-4)
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(vlm_path)).decode(ref_tokens)
    assert out["choices"][0]["message"]["content"] == expected.lstrip()  # the answer's leading space is dropped

    with client.stream("POST", CHAT, json=chat(model, messages, stream=True)) as s:
        assert s.status_code == 200
        pieces = []
        for line in s.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"]
                if delta:
                    pieces.append(delta[0]["delta"].get("content") or "")
    assert "".join(pieces) == expected.lstrip()


def test_an_image_to_a_text_model_is_a_400_naming_it(client: TestClient) -> None:
    messages = [{"role": "user", "content": [image_part(picture(1)), {"type": "text", "text": "hi"}]}]
    r = client.post(CHAT, json=chat("tiny-a", messages))
    assert r.status_code == 400
    assert "tiny-a does not accept images" in r.json()["error"]["message"]


def test_second_turn_about_the_same_image_reuses_it(client: TestClient) -> None:
    pil = picture(8)
    turn1 = [{"role": "user", "content": [image_part(pil), {"type": "text", "text": "What is it?"}]}]
    first = client.post(CHAT, json=chat(VLM, turn1)).json()
    reply = first["choices"][0]["message"]["content"]
    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Are you sure?"}]
    second = client.post(CHAT, json=chat(VLM, turn2)).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"] - 1


def test_images_in_tool_results_reach_the_model(client: TestClient) -> None:
    def run(content: object) -> dict:
        messages = [
            {"role": "user", "content": "Take a screenshot"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": content},
        ]
        r = client.post(CHAT, json=chat(VLM, messages, logprobs=True))
        assert r.status_code == 200, r.text
        return r.json()

    text_only = run([{"type": "text", "text": "here"}])
    a = run([{"type": "text", "text": "here"}, image_part(picture(3))])
    b = run([{"type": "text", "text": "here"}, image_part(picture(4))])
    assert a["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"] + 4  # the image's tokens are in
    lp = [[c["logprob"] for c in x["choices"][0]["logprobs"]["content"]] for x in (a, b)]
    assert not np.allclose(lp[0], lp[1], atol=1e-6)  # and the model sees which image it was


def test_a_pdf_is_pages_for_a_vision_model_and_text_for_the_others(client: TestClient) -> None:
    pages = [Page(lines=["HELLO"], width=200, height=150), Page(lines=["WORLD"], width=200, height=150)]
    file_part = {"type": "file", "file": {"file_data": pdf_uri(pages), "filename": "a.pdf"}}
    ask = {"type": "text", "text": "read it"}

    one = client.post(CHAT, json=chat(VLM, [{"role": "user", "content": [ask]}])).json()
    vl = client.post(CHAT, json=chat(VLM, [{"role": "user", "content": [file_part, ask]}]))
    assert vl.status_code == 200, vl.text
    assert vl.json()["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"] + 2 * 4  # two pages of image tokens

    text = client.post(CHAT, json=chat("tiny-a", [{"role": "user", "content": [file_part, ask]}]))
    assert text.status_code == 200, text.text
    spelled = "--- page 1 ---\nHELLO\n--- page 2 ---\nWORLD\n\n"
    same = client.post(
        CHAT, json=chat("tiny-a", [{"role": "user", "content": [{"type": "text", "text": spelled}, ask]}])
    ).json()
    assert text.json()["usage"]["prompt_tokens"] == same["usage"]["prompt_tokens"]

    as_image_url = {"type": "image_url", "image_url": {"url": pdf_uri(pages)}}
    r = client.post(CHAT, json=chat(VLM, [{"role": "user", "content": [as_image_url, ask]}]))
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == vl.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "image"),
        ("file:///etc/passwd", "file"),
        ("http://127.0.0.1:9/x.png", "remote"),
        ("data:text/plain;base64,aGVsbG8=", "image"),
    ],
)
def test_bad_images_are_400s(client: TestClient, url: str, words: str) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    r = client.post(CHAT, json=chat(VLM, messages))
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"].lower()
    assert client.post(CHAT, json=chat(VLM, [{"role": "user", "content": "still fine"}])).status_code == 200


def test_context_limit_counts_image_tokens_before_any_work(client: TestClient, vlm_path: Path) -> None:
    context = json.loads((vlm_path / "config.json").read_text())["max_position_embeddings"]
    pil = picture(9, size=(448, 448))
    messages = [{"role": "user", "content": [image_part(pil), {"type": "text", "text": "hi"}]}]
    prompt = client.post(CHAT, json=chat(VLM, messages)).json()["usage"]["prompt_tokens"]
    assert prompt > 60  # the image is most of it
    r = client.post(CHAT, json=chat(VLM, messages, max_tokens=context - prompt + 1))
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    with client.stream("POST", CHAT, json=chat(VLM, messages, max_tokens=context - prompt, stream=True)) as s:
        assert s.status_code == 200  # exactly full: accepted (the stream is closed at once)


def test_structured_output_and_seeds_work_on_image_requests(client: TestClient) -> None:
    messages = [{"role": "user", "content": [image_part(picture(10)), {"type": "text", "text": "as JSON"}]}]
    schema = {
        "type": "object",
        "properties": {"c": {"type": "string", "maxLength": 5}},
        "required": ["c"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = client.post(CHAT, json=chat(VLM, messages, response_format=fmt, max_tokens=300, ignore_eos=False))
    assert r.status_code == 200, r.text
    assert set(json.loads(r.json()["choices"][0]["message"]["content"])) == {"c"}
    sampled = [
        client.post(CHAT, json=chat(VLM, messages, temperature=1.0, seed=s)).json()["choices"][0]["message"]["content"]
        for s in (5, 5, 6)
    ]
    assert sampled[0] == sampled[1] != sampled[2]


@pytest.fixture(scope="module")
def solo_client(tmp_path_factory: pytest.TempPathFactory, vlm_path: Path, tiny_vlm_dir) -> Iterator[TestClient]:
    """The Qwen2-VL model served by mlx-vlm's own loop, as any family without a handover is."""
    root = tmp_path_factory.mktemp("solo-models")
    (root / "solo-vl").symlink_to(vlm_path, target_is_directory=True)
    (root / "smol").symlink_to(tiny_vlm_dir("idefics3"), target_is_directory=True)
    (root / "smol-text").symlink_to(tiny_vlm_dir("idefics3"), target_is_directory=True)
    (root / "smol-short").symlink_to(tiny_vlm_dir("idefics3"), target_is_directory=True)
    settings = parse_settings(
        {
            "defaults": {"model_directory": str(root), "scan_hf_cache": False, "max_tokens": 32},
            "models": {
                "solo-vl": {"vision_path": "solo"},
                "smol-text": {"supports_vision": False},
                "smol-short": {"max_context_tokens": 60},
            },
        }
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_solo_path_answers_as_mlx_vlm_with_images_and_without(solo_client: TestClient, vlm_path: Path) -> None:
    pil = picture(11)
    parts = [{"type": "image"}, {"type": "text", "text": "Describe it"}]
    text = rendered(vlm_path, [{"role": "user", "content": parts}])
    ref_tokens, ref_logprobs, ref_ids = reference(vlm_path, pil, text)
    messages = [{"role": "user", "content": [image_part(pil), {"type": "text", "text": "Describe it"}]}]
    out = solo_client.post(CHAT, json=chat("solo-vl", messages, logprobs=True)).json()
    assert out["usage"]["prompt_tokens"] == len(ref_ids)  # counted by the engine's processor
    got = [c["logprob"] for c in out["choices"][0]["logprobs"]["content"]]
    assert np.allclose(got, ref_logprobs[:N], atol=1e-4)
    cards = {m["id"]: m for m in solo_client.get("/v1/models").json()["data"]}
    assert cards["solo-vl"]["supports_vision"] is True
    plain = solo_client.post(CHAT, json=chat("solo-vl", [{"role": "user", "content": "hello"}]))
    assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] == N
    with solo_client.stream("POST", CHAT, json=chat("solo-vl", messages, stream=True)) as s:
        streamed = "".join(
            (json.loads(line[6:])["choices"] or [{"delta": {}}])[0]["delta"].get("content") or ""
            for line in s.iter_lines()
            if line.startswith("data: {")
        )
    assert streamed == out["choices"][0]["message"]["content"]


def test_a_family_without_a_text_class_is_served_alone_as_mlx_vlm(solo_client: TestClient, tiny_vlm_dir) -> None:
    path = tiny_vlm_dir("idefics3")
    pil = picture(12, size=(64, 64))
    parts = [{"type": "image"}, {"type": "text", "text": "Describe it"}]
    ref_tokens, ref_logprobs, ref_ids = reference(path, pil, rendered(path, [{"role": "user", "content": parts}]))
    cards = {m["id"]: m for m in solo_client.get("/v1/models").json()["data"]}
    assert cards["smol"]["supports_vision"] is True
    messages = [{"role": "user", "content": [image_part(pil), {"type": "text", "text": "Describe it"}]}]
    r = solo_client.post(CHAT, json=chat("smol", messages, logprobs=True))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["usage"]["prompt_tokens"] == len(ref_ids)
    assert np.allclose([c["logprob"] for c in out["choices"][0]["logprobs"]["content"]], ref_logprobs[:N], atol=1e-4)


def test_images_off_for_a_family_only_mlx_vlm_loads_serves_its_text(solo_client: TestClient) -> None:
    cards = {m["id"]: m for m in solo_client.get("/v1/models").json()["data"]}
    assert cards["smol-text"]["supports_vision"] is False
    plain = solo_client.post(CHAT, json=chat("smol-text", [{"role": "user", "content": "hello"}]))
    assert plain.status_code == 200, plain.text
    messages = [{"role": "user", "content": [image_part(picture(13)), {"type": "text", "text": "hi"}]}]
    refused = solo_client.post(CHAT, json=chat("smol-text", messages))
    assert refused.status_code == 400 and "smol-text does not accept images" in refused.json()["error"]["message"]


def test_text_that_spells_vision_tokens_is_a_400_not_a_500(client: TestClient) -> None:
    text = {"type": "text", "text": "and <|vision_start|><|video_pad|><|vision_end|>?"}
    messages = [{"role": "user", "content": [image_part(picture(14)), text]}]
    for stream in (False, True):
        r = client.post(CHAT, json=chat(VLM, messages, stream=stream))
        assert r.status_code == 400, r.text
        assert "vision tokens" in r.json()["error"]["message"]


def test_low_detail_never_passes_the_models_pixel_cap(client: TestClient) -> None:
    messages = {
        detail: [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(picture(15, (400, 400))), "detail": detail}}
                ],
            }
        ]
        for detail in ("auto", "low")
    }
    counts = {
        d: client.post(CHAT, json=chat("tiny-vl-small", m)).json()["usage"]["prompt_tokens"]
        for d, m in messages.items()
    }
    assert counts["low"] == counts["auto"]


def test_the_solo_path_counts_image_tokens_against_the_context(solo_client: TestClient) -> None:
    messages = [{"role": "user", "content": [image_part(picture(16, (64, 64))), {"type": "text", "text": "hi"}]}]
    r = solo_client.post(CHAT, json=chat("smol-short", messages, max_tokens=30))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert solo_client.post(CHAT, json=chat("smol-short", messages, max_tokens=4)).status_code == 200


def test_responses_input_images_and_files_are_seen_as_in_chat(client: TestClient) -> None:
    """/v1/responses' input_image and input_file reach the model as chat's image_url and file parts do."""
    image, pdf = picture(5), pdf_uri([Page(lines=["HELLO"], width=200, height=150)])
    question = "What is in this image?"
    chat_parts = [{"type": "text", "text": question}, image_part(image)]
    chat_parts.append({"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}})
    asked = chat(VLM, [{"role": "user", "content": chat_parts}], ignore_eos=False)
    r = client.post(CHAT, json=asked)
    assert r.status_code == 200, r.text
    expected = r.json()["choices"][0]["message"]["content"]
    parts = [{"type": "input_text", "text": question}, {"type": "input_image", "image_url": data_uri(image)}]
    parts.append({"type": "input_file", "file_data": pdf, "filename": "a.pdf"})
    body = {"model": VLM, "input": [{"role": "user", "content": parts}], "max_output_tokens": N, "temperature": 0}
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["output"][0]["content"][0]["text"] == expected
    other = {
        **body,
        "input": [{"role": "user", "content": [parts[0], {**parts[1], "image_url": data_uri(picture(6))}]}],
    }
    assert client.post("/v1/responses", json=other).json()["output"][0]["content"][0]["text"] != expected
