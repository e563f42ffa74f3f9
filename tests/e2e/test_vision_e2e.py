"""Images and PDFs through a real server process and the official openai client: streamed and not alike, a PDF as
a `file` part, a clear BadRequestError for a model without vision, a stream cut during the image's prefill frees
its slot, and the trained colour model names colours it sees."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import base_config
from tests.fixtures.pdfs import Page, Rect, build_pdf
from tests.server_process import RouterServer

pytestmark = pytest.mark.e2e
VLM = "tiny-vl"


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def vision_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_vlm_dir, random_llm_dir: Path
) -> Iterator[RouterServer]:
    root = tmp_path_factory.mktemp("vision-e2e-models")
    (root / VLM).symlink_to(tiny_vlm_dir("qwen2_5_vl"), target_is_directory=True)
    (root / "tiny-a").symlink_to(random_llm_dir, target_is_directory=True)
    config = base_config(root, prefill_step_size=16)
    with RouterServer(tmp_path_factory.mktemp("vision-e2e"), config) as srv:
        yield srv


def ask(image: Image.Image, text: str = "What is in the picture?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": data_uri(image)}},
            ],
        }
    ]


def test_streamed_and_not_give_the_same_answer(vision_server: RouterServer) -> None:
    client = vision_server.openai()
    image = Image.new("RGB", (200, 150), (200, 30, 30))
    whole = client.chat.completions.create(model=VLM, messages=ask(image), max_tokens=12, temperature=0)
    chunks = client.chat.completions.create(
        model=VLM,
        messages=ask(image),
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == whole.choices[0].message.content
    assert usage is not None and usage.prompt_tokens == whole.usage.prompt_tokens > 20


def test_a_pdf_file_part_and_a_model_without_vision(vision_server: RouterServer) -> None:
    client = vision_server.openai()
    pdf = build_pdf([Page(lines=["Hello"], width=300, height=200, rects=[Rect(20, 20, 100, 50)])])
    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64," + base64.b64encode(pdf).decode(), "filename": "x.pdf"},
    }
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "Read it"}]}]
    seen = client.chat.completions.create(model=VLM, messages=messages, max_tokens=4, temperature=0)
    read = client.chat.completions.create(model="tiny-a", messages=messages, max_tokens=4, temperature=0)
    assert seen.usage.prompt_tokens > read.usage.prompt_tokens  # a page image against a line of text
    with pytest.raises(openai.BadRequestError, match="does not accept images"):
        client.chat.completions.create(model="tiny-a", messages=ask(Image.new("RGB", (64, 64))), max_tokens=4)


def test_a_client_gone_during_the_image_prefill_frees_its_slot(vision_server: RouterServer) -> None:
    big = Image.effect_noise((1024, 1024), 64).convert("RGB")
    url = f"{vision_server.base_url}/v1/chat/completions"
    body = {"model": VLM, "messages": ask(big), "max_tokens": 200, "ignore_eos": True}
    t0 = time.monotonic()
    assert httpx.post(url, json=body, timeout=120).json()["usage"]["completion_tokens"] == 200
    whole = time.monotonic() - t0  # what a 200-token answer takes here
    body.update(max_tokens=3000, stream=True)
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        assert r.status_code == 200
        for _ in r.iter_lines():
            break  # the first line (a keep-alive or the role) and the client is gone
    gone_at = time.monotonic()
    deadline = gone_at + 2 * whole + 2  # a 3000-token answer would take ~15x `whole`
    while time.monotonic() < deadline:
        models = {m["id"]: m for m in vision_server.health()["models"]}
        if models[VLM]["requests"] == 0 and models[VLM]["running"] == 0 and models[VLM]["queued"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the request was not dropped: {vision_server.health()}")


def test_the_trained_colour_model_names_what_it_sees(tmp_path: Path, trained_vlm_dir) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "colours").symlink_to(trained_vlm_dir, target_is_directory=True)
    from tests.fixtures.vlm_training import COLOUR_QUESTION

    with RouterServer(tmp_path / "srv", base_config(root)) as srv:
        client = srv.openai()
        for name, rgb in (("red", (220, 20, 30)), ("blue", (20, 40, 210)), ("green", (30, 190, 40))):
            reply = client.chat.completions.create(
                model="colours",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": COLOUR_QUESTION},
                            {"type": "image_url", "image_url": {"url": data_uri(Image.new("RGB", (96, 80), rgb))}},
                        ],
                    }
                ],
                max_tokens=4,
                temperature=0,
            )
            assert reply.choices[0].message.content.strip() == name


def test_memory_returns_after_a_burst_of_image_requests(tmp_path: Path, tiny_vlm_dir) -> None:
    """Once the engine is idle after a burst of large images, MLX's buffer cache is empty and the engine's RSS is
    back near where a text request left it (the caches that keep things on purpose, prefix and image features,
    are off here). A 1024x1024 image is ~5,300 patches: the tower's full-attention layer takes ~200 MB while it
    runs; without the idle trim the freed buffers stayed with the process (bench/HISTORY.md has the figures)."""
    import concurrent.futures
    import json
    import shutil

    import psutil

    model = tmp_path / "models" / VLM
    shutil.copytree(tiny_vlm_dir("qwen2_5_vl"), model)
    pre = json.loads((model / "preprocessor_config.json").read_text())
    pre["max_pixels"] = 1024 * 1024
    (model / "preprocessor_config.json").write_text(json.dumps(pre))
    config = base_config(model.parent, prefix_cache_gb=0, image_cache_gb=0, vision_max_pixels=1024 * 1024)
    with RouterServer(tmp_path / "srv", config) as srv:
        client = srv.openai()
        pid = srv.health()["engine_pid"]

        def one(seed: int) -> int:
            image = Image.effect_noise((1024, 1024), 40 + seed).convert("RGB")
            reply = client.chat.completions.create(model=VLM, messages=ask(image), max_tokens=4, temperature=0)
            return reply.usage.completion_tokens

        client.chat.completions.create(model=VLM, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        time.sleep(3.5)
        base = psutil.Process(pid).memory_info().rss / 2**20
        held, cached = [], []
        for burst in range(2):
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                assert list(pool.map(one, range(6 * burst, 6 + 6 * burst))) == [4] * 6
            time.sleep(3.5)  # idle past the engine's trim delay
            held.append(round(psutil.Process(pid).memory_info().rss / 2**20 - base))
            cached.append(srv.health()["memory"]["mlx_cache_gb"])
        print(f"engine RSS {base:.0f} MB after a text request; after each burst of 6 images: +{held} MB, {cached}")
        assert cached == [0.0, 0.0]
        assert max(held) < 70, held  # the first image's one-time cost (processor code, tower kernels) is in it


def test_anthropic_image_and_document_blocks_take_the_vision_path(vision_server: RouterServer) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=vision_server.base_url, api_key="not-needed", max_retries=0)
    image = Image.new("RGB", (200, 150), (200, 30, 30))
    source = {"type": "base64", "media_type": "image/png", "data": data_uri(image).split(",", 1)[1]}
    blocks = [{"type": "text", "text": "What is in the picture?"}, {"type": "image", "source": source}]
    msg = client.messages.create(
        model=VLM, max_tokens=12, messages=[{"role": "user", "content": blocks}], extra_body={"temperature": 0}
    )
    chat = vision_server.openai().chat.completions.create(model=VLM, messages=ask(image), max_tokens=12, temperature=0)
    assert "".join(b.text for b in msg.content if b.type == "text") == (chat.choices[0].message.content or "")
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == chat.usage.prompt_tokens > 20
    pdf = base64.b64encode(build_pdf([Page(lines=["Hello"], width=300, height=200)])).decode()
    doc = {
        "type": "document",
        "title": "x.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
    }
    file_part = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + pdf, "filename": "x.pdf"}}
    counted = client.messages.count_tokens(model=VLM, messages=[{"role": "user", "content": [doc]}]).input_tokens
    read = vision_server.openai().chat.completions.create(
        model=VLM, messages=[{"role": "user", "content": [file_part]}], max_tokens=1
    )
    assert counted == read.usage.prompt_tokens > 20  # the page went in as an image
