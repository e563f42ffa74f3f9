"""The dashboard (/ui) and the API docs (/docs, /redoc) in a real browser: Debian's chromium, driven by Playwright,
against a real server with an API key. Every request the browser makes to anywhere but the server is refused and
recorded, so the pages are shown to work offline.

Skipped, saying why, where chromium (`apt-get install -y chromium`) or the `playwright` package is missing; CI
installs both (README's test command)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import base_config
from tests.fixtures.cases import CALL_REASONING, REASONING, TOOLS
from tests.server_process import RouterServer

KEY = "dashboard-test-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _launch(playwright: Any) -> Any:
    # root (CI, containers) cannot use chromium's sandbox
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


@pytest.fixture(scope="module")
def sync_api() -> Any:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser tests need it")
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (.[test])")


@pytest.fixture(scope="module")
def dash_server(
    tmp_path_factory: pytest.TempPathFactory, trained_llm_dir: Any, trained_vlm_dir: Path
) -> Iterator[RouterServer]:
    root = tmp_path_factory.mktemp("dash-models")
    (root / "trained-qwen").symlink_to(trained_llm_dir("qwen"), target_is_directory=True)
    (root / "colours").symlink_to(trained_vlm_dir, target_is_directory=True)
    config = base_config(root)
    config["server"]["api_keys"] = [KEY]
    with RouterServer(tmp_path_factory.mktemp("dash-server"), config) as srv:
        yield srv


@pytest.fixture
def page(sync_api: Any, dash_server: RouterServer, tmp_path: Path) -> Iterator[Any]:
    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(dash_server.base_url + "/"):
            route.continue_()
        else:  # a CDN, a font, anything: the pages must not need it
            outside.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = _launch(pw)
        context = browser.new_context(viewport={"width": 1280, "height": 1300})
        context.route("**/*", only_the_server)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.blocked = []  # what the pages' Content-Security-Policy refused
        page.on("console", lambda m: "Content Security Policy" in m.text and page.blocked.append(m.text))
        try:
            yield page
        finally:
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            browser.close()
    assert outside == [], f"the page fetched from outside the server: {outside}"
    assert errors == [], f"script errors on the page: {errors}"
    # ReDoc's footer logo comes from its CDN: the policy refuses it before it is asked for, and nothing else
    needed = [m for m in page.blocked if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in m]
    assert needed == [], f"the page needs what its policy refuses: {needed}"


def red_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (220, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def send(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.press("#chat-input", "Enter")


def last(page: Any, testid: str) -> Any:
    return page.get_by_test_id(testid).last


def test_pages_hold_no_data_without_the_key(dash_server: RouterServer) -> None:
    base = dash_server.base_url
    assert httpx.get(base + "/", follow_redirects=False).headers["location"] == "/ui"
    for path in ("/ui", "/ui/dashboard.js", "/ui/dashboard.css", "/docs", "/docs/assets/swagger-ui-bundle.js"):
        assert httpx.get(base + path).status_code == 200, path
    for path in ("/v1/dashboard/activity", "/v1/dashboard/logs", "/v1/health", "/v1/models"):
        r = httpx.get(base + path)
        assert r.status_code == 401, path
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base + "/ui/..%2Fpyproject.toml").status_code == 404  # only the page's own files
    assert "default-src 'self'" in httpx.get(base + "/ui").headers["content-security-policy"]
    assert httpx.get(base + "/ui/nothing.js").status_code == 404


def test_dashboard_loads_a_model_streams_and_counts(page: Any, sync_api: Any, dash_server: RouterServer) -> None:
    expect = sync_api.expect
    page.goto(dash_server.base_url + "/")
    assert page.url.endswith("/ui")
    # no key yet: the page asks for one and shows no data
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("locked")
    expect(page.locator("#models tr")).to_have_count(0)
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    expect(page.get_by_test_id("status")).to_have_text("ok")
    expect(page.get_by_test_id("requests-total")).to_have_text("0")
    expect(page.get_by_test_id("pressure")).to_have_text("normal")

    # load with the button
    qwen = page.locator("tr[data-model='trained-qwen']")
    expect(qwen.locator(".badge")).to_have_text("stopped")
    qwen.get_by_role("button", name="load trained-qwen").click()
    expect(qwen.locator(".badge")).to_have_text("ready", timeout=30_000)
    expect(qwen.get_by_role("button")).to_have_text("Unload")
    expect(page.get_by_test_id("log")).to_contain_text("engine ready in")  # the server's recent log

    # a streamed answer with its reasoning apart, arriving in pieces
    page.select_option("#chat-model", "trained-qwen")
    page.evaluate(
        """() => { window.updates = 0; new MutationObserver((records) => { window.updates += records.length; })
                     .observe(document.getElementById('transcript'), {childList: true, subtree: true}); }"""
    )
    send(page, "Think step by step: what is 2+2?")
    expect(last(page, "answer")).to_have_text("The answer is 4.", timeout=20_000)
    expect(last(page, "reasoning")).to_have_text(REASONING)
    expect(page.get_by_test_id("chat-stats")).to_contain_text("finish: stop")
    assert page.evaluate("window.updates") >= 4, "the text arrives chunk by chunk, not in one piece"

    # the counters moved
    expect(page.get_by_test_id("requests-total")).to_have_text("1")
    expect(page.get_by_test_id("tps")).not_to_have_text("0.0")
    assert int(page.get_by_test_id("completion-tokens").inner_text().replace(",", "")) > 5

    # tool calls, with the tools given as JSON
    page.click("#chat-clear")
    page.click("summary")
    page.fill("#chat-tools", json.dumps(TOOLS))
    send(page, "Think first, then get the weather in Paris.")
    expect(last(page, "tool-calls")).to_have_text('get_weather({"location": "Paris"})', timeout=20_000)
    expect(last(page, "reasoning")).to_have_text(CALL_REASONING)
    expect(page.get_by_test_id("chat-stats")).to_contain_text("finish: tool_calls")
    expect(page.get_by_test_id("requests-total")).to_have_text("2")


def test_playground_sends_an_image_and_a_pdf(page: Any, sync_api: Any, dash_server: RouterServer) -> None:
    from tests.fixtures.pdfs import Page, Rect, build_pdf
    from tests.fixtures.vlm_training import COLOUR_QUESTION

    expect = sync_api.expect
    page.add_init_script(f"localStorage.setItem('mlx-router.api-key', {json.dumps(KEY)})")
    page.goto(dash_server.base_url + "/ui")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("tr[data-model='colours']")).to_contain_text("vision")
    page.select_option("#chat-model", "colours")  # loads on first use
    page.set_input_files("#chat-file", files=[{"name": "red.png", "mimeType": "image/png", "buffer": red_png()}])
    with page.expect_request("**/v1/chat/completions") as sent:
        send(page, COLOUR_QUESTION)
    part = sent.value.post_data_json["messages"][-1]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    expect(last(page, "answer")).to_have_text("red", timeout=30_000)
    expect(page.locator(".attachment").last).to_contain_text("red.png")

    # a PDF goes as a file part; this model sees its page as an image
    page.click("#chat-clear")
    blue = build_pdf([Page(width=96, height=80, rects=[Rect(0, 0, 96, 80, (0.08, 0.16, 0.82))])])
    page.set_input_files("#chat-file", files=[{"name": "blue.pdf", "mimeType": "application/pdf", "buffer": blue}])
    with page.expect_request("**/v1/chat/completions") as sent:
        send(page, COLOUR_QUESTION)
    part = sent.value.post_data_json["messages"][-1]["content"][1]
    assert part["type"] == "file" and part["file"]["filename"] == "blue.pdf"
    assert part["file"]["file_data"].startswith("data:application/pdf;base64,")
    expect(last(page, "answer")).to_have_text("blue", timeout=30_000)


def test_docs_render_offline(page: Any, sync_api: Any, dash_server: RouterServer) -> None:
    expect = sync_api.expect
    page.goto(dash_server.base_url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("mlx-router", timeout=15_000)
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.goto(dash_server.base_url + "/redoc")
    expect(page.locator("h1").first).to_contain_text("mlx-router", timeout=15_000)
