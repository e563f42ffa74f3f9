"""Chat templates: built-in formats, template selection, message normalisation, errors as 400s."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlx_router.serving.templates import (
    BUILTIN_TEMPLATES,
    ChatTemplateRenderer,
    TemplateRenderError,
    UnknownTemplateError,
    builtin_template_source,
    normalize_messages,
    wants_parsed_arguments,
)

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                },
                "required": ["location"],
            },
        },
    }
]

CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
]

# Markers each family must show for CHAT + TOOLS, and the text a generation prompt appends.
GOLDEN: dict[str, tuple[list[str], str]] = {
    "qwen": (
        [
            "<|im_start|>system\nYou are terse.\n\n# Tools\n",
            '<tools>\n{"type": "function", "function": {"name": "get_weather"',
            '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
            "</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>\n",
        ],
        "<|im_start|>assistant\n",
    ),
    "chatml": (
        [
            "<|im_start|>system\nYou are terse.\n\n",
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n",
            '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call><|im_end|>',
            "<|im_start|>tool\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>\n",
        ],
        "<|im_start|>assistant\n",
    ),
    "llama3": (
        [
            "<BOS><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n",
            "Today Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>",
            "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions",
            '"name": "get_weather"',
            "Weather in Paris?<|eot_id|>",
            '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": '
            '{"location": "Paris"}}<|eot_id|>',
            "<|start_header_id|>ipython<|end_header_id|>\n\n18 C, sunny<|eot_id|>",
        ],
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "deepseek": (
        [
            "<BOS>You are terse.\n\n## Tools\n",
            "### get_weather\nDescription: Get the current weather",
            "<｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
            '<｜tool▁sep｜>get_weather\n```json\n{"location": "Paris"}\n```<｜tool▁call▁end｜>'
            "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
            "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18 C, sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
        ],
        "",
    ),  # after tool outputs DeepSeek answers without a new assistant tag
    "phi4": (
        [
            '<|system|>You are terse.<|tool|>[{"name": "get_weather", "description": "Get the current weather"',
            "]<|/tool|><|end|><|user|>Weather in Paris?<|end|>",
            '<|assistant|><|tool_call|>[{"name": "get_weather", "arguments": {"location": "Paris"}}]'
            "<|/tool_call|><|end|>",
            "<|tool_response|>18 C, sunny<|end|>",
        ],
        "<|assistant|>",
    ),
    "gpt-oss": (
        [
            "<|start|>system<|message|>You are ChatGPT",
            "Reasoning: medium\n",
            "Calls to these tools must go to the commentary channel: 'functions'.<|end|>",
            "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n# Tools\n\n## functions\n\n"
            "namespace functions {\n\n// Get the current weather\ntype get_weather = (_: {\n// City name\n"
            'location: string,\nunit?: "celsius" | "fahrenheit", // default: "celsius"\n}) => any;\n\n'
            "} // namespace functions<|end|>",
            "<|start|>user<|message|>Weather in Paris?<|end|>",
            "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
            '{"location": "Paris"}<|call|>',
            "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>18 C, sunny<|end|>",
        ],
        "<|start|>assistant",
    ),
    "generic": (
        [
            "<BOS>### System:\nYou are terse.\n\n### Tools:\n",
            "### User:\nWeather in Paris?\n\n",
            '### Assistant:\n<tool_call>{"name": "get_weather", "arguments": {"location": "Paris"}}</tool_call>\n\n',
            "### Tool result (call_1):\n18 C, sunny\n\n",
        ],
        "### Assistant:\n",
    ),
}


def fake_tokenizer(**attrs: Any) -> SimpleNamespace:
    """A tokenizer stand-in without a chat template (the case where built-ins are used)."""
    return SimpleNamespace(**{"bos_token": "<BOS>", "eos_token": "<EOS>", **attrs})


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real HF tokenizer with a Qwen-style template, built offline (~1.5 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from tests.fixtures.models import cached_tokenizer

    return transformers.AutoTokenizer.from_pretrained(str(cached_tokenizer("qwen")))


def test_builtin_names_match_files() -> None:
    assert set(BUILTIN_TEMPLATES) == {"llama3", "qwen", "chatml", "deepseek", "phi4", "gpt-oss", "generic"}
    for name in BUILTIN_TEMPLATES:
        assert "{%" in builtin_template_source(name)


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtin_renders_tool_conversation(name: str) -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), name)
    assert renderer.origin == f"builtin:{name}"
    snippets, generation_prompt = GOLDEN[name]
    with_prompt = renderer.render(CHAT, tools=TOOLS, add_generation_prompt=True, current_date="2025-01-01")
    without = renderer.render(CHAT, tools=TOOLS, add_generation_prompt=False, current_date="2025-01-01")
    for snippet in snippets:
        assert snippet in without, f"{name}: missing {snippet!r} in\n{without}"
    assert with_prompt == without + generation_prompt


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtin_plain_chat_and_continuation(name: str) -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), name)
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    text = renderer.render(chat)
    assert text.index("Hi") < text.index("Hello!") < text.index("Bye")
    assert "get_weather" not in text and "Tools" not in text
    assert text.endswith(GOLDEN[name][1] or "<｜Assistant｜>")


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_arguments_as_string_or_object_render_the_same(name: str) -> None:
    as_object = copy.deepcopy(CHAT)
    as_object[2]["tool_calls"][0]["function"]["arguments"] = {"location": "Paris"}
    renderer = ChatTemplateRenderer(fake_tokenizer(), name)
    kwargs: dict[str, Any] = {"tools": TOOLS, "current_date": "2025-01-01"}
    assert renderer.render(CHAT, **kwargs) == renderer.render(as_object, **kwargs)


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtin_rejects_unknown_role(name: str) -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), name)
    with pytest.raises(TemplateRenderError, match="role 'wizard'"):
        renderer.render([{"role": "wizard", "content": "abracadabra"}])


def test_qwen_thinking_switch_and_reasoning_history() -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), "qwen")
    chat = [{"role": "user", "content": "2+2?"}]
    assert renderer.render(chat).endswith("<|im_start|>assistant\n")
    no_think = renderer.render(chat, enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert renderer.render(chat, enable_thinking=True).endswith("<|im_start|>assistant\n")
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "A", "reasoning_content": "old"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "B", "reasoning_content": "new"},
    ]
    text = renderer.render(history, add_generation_prompt=False)
    assert "old" not in text  # reasoning before the last user query is dropped, as Qwen3 does
    assert "<|im_start|>assistant\n<think>\nnew\n</think>\n\nB<|im_end|>" in text


def test_gpt_oss_reasoning_effort_and_identity() -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), "gpt-oss")
    text = renderer.render(
        [{"role": "user", "content": "hi"}],
        reasoning_effort="high",
        model_identity="You are a test.",
        current_date="2025-02-03",
    )
    assert text.startswith(
        "<|start|>system<|message|>You are a test.\nKnowledge cutoff: 2024-06\n"
        "Current date: 2025-02-03\n\nReasoning: high\n\n"
    )
    assert "<|start|>developer" not in text  # no instructions, no tools
    assert "commentary channel" not in text


def test_gpt_oss_tool_result_named_by_call_id() -> None:
    chat: list[dict[str, Any]] = [
        {"role": "user", "content": "two cities"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "both",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "first", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "second", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
    ]
    text = ChatTemplateRenderer(fake_tokenizer(), "gpt-oss").render(chat, current_date="x")
    assert "<|start|>assistant<|channel|>analysis<|message|>both<|end|>" in text
    assert "<|start|>functions.first to=assistant<|channel|>commentary<|message|>1<|end|>" in text
    assert "<|start|>functions.second to=assistant<|channel|>commentary<|message|>2<|end|>" in text


def test_deepseek_strips_reasoning_and_thinking_switch() -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), "deepseek")
    chat = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA"},
        {"role": "user", "content": "q2"},
    ]
    text = renderer.render(chat)
    assert text == "<BOS><｜User｜>q<｜Assistant｜>\n\nA<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜>"
    assert renderer.render(chat, enable_thinking=True).endswith("<｜Assistant｜><think>\n")


def test_bos_token_comes_from_the_tokenizer() -> None:
    chat = [{"role": "user", "content": "hi"}]
    with_bos = ChatTemplateRenderer(fake_tokenizer(bos_token="<|begin_of_text|>"), "llama3").render(chat)
    assert with_bos.startswith("<|begin_of_text|><|start_header_id|>system")
    without = ChatTemplateRenderer(fake_tokenizer(bos_token=None), "llama3").render(chat)
    assert without.startswith("<|start_header_id|>system")


def test_text_parts_and_developer_role_are_normalised() -> None:
    """Text parts join as everywhere else (`conversation.normalize.join_text`: nothing between them)."""
    renderer = ChatTemplateRenderer(fake_tokenizer(), "chatml")
    chat = [
        {"role": "developer", "content": [{"type": "text", "text": "Rule one."}]},
        {"role": "user", "content": [{"type": "text", "text": "Part A"}, {"type": "text", "text": "Part B"}]},
    ]
    assert renderer.render(chat) == (
        "<|im_start|>system\nRule one.<|im_end|>\n<|im_start|>user\nPart APart B<|im_end|>\n<|im_start|>assistant\n"
    )


def test_normalisation_does_not_touch_the_callers_messages() -> None:
    chat = copy.deepcopy(CHAT)
    chat[2]["tool_calls"].append(None)  # tolerated and passed on
    before = copy.deepcopy(chat)
    out = normalize_messages(chat, parse_arguments=True, keep_media=False)
    assert chat == before
    assert out[2]["tool_calls"][0]["function"]["arguments"] == {"location": "Paris"}
    cleaned = normalize_messages(
        [{"role": "assistant", "content": "x", "tool_calls": None, "name": None}],
        parse_arguments=True,
        keep_media=False,
    )
    assert cleaned == [{"role": "assistant", "content": "x"}]


def test_media_parts_kept_only_for_tokenizer_templates() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:x"}},
    ]
    chat = [{"role": "user", "content": content}]
    kept = normalize_messages(chat, parse_arguments=True, keep_media=True)
    assert kept[0]["content"] == content
    dropped = normalize_messages(chat, parse_arguments=True, keep_media=False)
    assert dropped[0]["content"] == "what is this"


def test_arguments_stay_text_for_templates_that_concatenate_them() -> None:
    deepseek_style = (
        "{% for m in messages %}{% for t in m.tool_calls or [] %}"
        "{{ '```json\\n' + t['function']['arguments'] + '\\n```' }}{% endfor %}{% endfor %}"
    )
    assert not wants_parsed_arguments(deepseek_style)
    assert wants_parsed_arguments("{{ call.arguments | tojson }}")
    assert wants_parsed_arguments("{% for k, v in call.arguments.items() %}{{ k }}{% endfor %}")
    text = ChatTemplateRenderer(fake_tokenizer(), deepseek_style).render(CHAT)
    assert text == '```json\n{"location": "Paris"}\n```'
    tojson_style = (
        "{% for m in messages %}{% for t in m.tool_calls or [] %}"
        "{{ t.function.arguments | tojson }}{% endfor %}{% endfor %}"
    )
    assert ChatTemplateRenderer(fake_tokenizer(), tojson_style).render(CHAT) == '{"location": "Paris"}'


def test_template_selection_and_origin() -> None:
    assert ChatTemplateRenderer(fake_tokenizer()).origin == "builtin:generic"
    assert ChatTemplateRenderer(fake_tokenizer(chat_template="")).origin == "builtin:generic"
    own = fake_tokenizer(chat_template="{% for m in messages %}[{{ m.content }}]{% endfor %}")
    renderer = ChatTemplateRenderer(own)
    assert renderer.origin == "tokenizer"
    assert renderer.render([{"role": "user", "content": "x"}]) == "[x]"  # no apply_chat_template: our env
    assert ChatTemplateRenderer(own, "phi4").origin == "builtin:phi4"
    inline = ChatTemplateRenderer(own, "{{ bos_token }}{{ messages[0].content }}")
    assert inline.origin == "inline" and inline.source == "{{ bos_token }}{{ messages[0].content }}"
    assert inline.render([{"role": "user", "content": "y"}]) == "<BOS>y"


def test_unknown_template_name_lists_valid_names() -> None:
    with pytest.raises(UnknownTemplateError) as info:
        ChatTemplateRenderer(fake_tokenizer(), "llama2")
    assert isinstance(info.value, ValueError)
    for name in BUILTIN_TEMPLATES:
        assert name in str(info.value)
    with pytest.raises(UnknownTemplateError):
        builtin_template_source("../pyproject")


def test_inline_syntax_error_fails_at_construction() -> None:
    with pytest.raises(TemplateRenderError, match="does not compile"):
        ChatTemplateRenderer(fake_tokenizer(), "{% for m in messages %}{{ m.content }}")


def test_raise_exception_becomes_template_render_error() -> None:
    alternate = (
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
        "{% endif %}{{ m.content }}{% endfor %}"
    )
    renderer = ChatTemplateRenderer(fake_tokenizer(), alternate)
    assert renderer.render([{"role": "user", "content": "a"}]) == "a"
    with pytest.raises(TemplateRenderError, match="Conversation roles must alternate"):
        renderer.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_type_errors_and_sandbox_escapes_are_render_errors() -> None:
    with pytest.raises(TemplateRenderError):  # str + int inside the template: a TypeError
        ChatTemplateRenderer(fake_tokenizer(), "{{ messages[0].content + 1 }}").render(
            [{"role": "assistant", "content": "x"}]
        )
    # a null content renders as "" even in templates that glue strings to it
    glued = ChatTemplateRenderer(fake_tokenizer(), "{{ '[' + messages[0].content + ']' }}")
    assert glued.render([{"role": "assistant", "content": None}]) == "[]"
    with pytest.raises(TemplateRenderError, match="unsafe|not allowed|access"):
        ChatTemplateRenderer(fake_tokenizer(), "{{ ''.__class__.__mro__ }}").render([])
    with pytest.raises(TemplateRenderError):
        ChatTemplateRenderer(fake_tokenizer(), "{% set ns = namespace(_x=1) %}").render([])
    with pytest.raises(TemplateRenderError):  # immutable sandbox: no mutation of the messages
        ChatTemplateRenderer(fake_tokenizer(), "{{ messages.append(1) }}").render([])


def test_template_globals_like_transformers() -> None:
    source = (
        "{{ {'b': '<é>'} | tojson }}|{{ strftime_now('%Y') | length }}|{% set ns = namespace(n=1) %}"
        "{% set ns.n = ns.n + 1 %}{{ ns.n }}|{% generation %}G{% endgeneration %}|"
        "{% for i in [1, 2, 3] %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    assert ChatTemplateRenderer(fake_tokenizer(), source).render([]) == '{"b": "<é>"}|4|2|G|1'


def test_reserved_kwargs_are_rejected() -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), "chatml")
    with pytest.raises(TemplateRenderError, match="tokenize"):
        renderer.render([{"role": "user", "content": "x"}], tokenize=True)


def test_bad_message_shapes_are_render_errors() -> None:
    renderer = ChatTemplateRenderer(fake_tokenizer(), "chatml")
    with pytest.raises(TemplateRenderError, match=r"messages\[0\]"):
        renderer.render(["hello"])  # type: ignore[list-item]
    with pytest.raises(TemplateRenderError, match="role"):
        renderer.render([{"content": "no role"}])


# --- a real HF tokenizer's own template -------------------------------------------------------------------


def test_tokenizer_template_matches_apply_chat_template(qwen_tokenizer: Any) -> None:
    renderer = ChatTemplateRenderer(qwen_tokenizer)
    assert renderer.origin == "tokenizer" and renderer.source == qwen_tokenizer.chat_template
    expected_messages = normalize_messages(CHAT, parse_arguments=True, keep_media=True)
    for add in (True, False):
        for kwargs in ({}, {"enable_thinking": False}):
            expected = qwen_tokenizer.apply_chat_template(
                expected_messages, tools=TOOLS, add_generation_prompt=add, tokenize=False, **kwargs
            )
            assert renderer.render(CHAT, tools=TOOLS, add_generation_prompt=add, **kwargs) == expected
    assert renderer.render(CHAT, tools=TOOLS, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_plain_chat_through_tokenizer_equals_hf(qwen_tokenizer: Any) -> None:
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "U2"},
    ]
    expected = qwen_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert ChatTemplateRenderer(qwen_tokenizer).render(chat) == expected


def test_our_environment_renders_hf_templates_like_transformers(qwen_tokenizer: Any) -> None:
    # The same Jinja text run inline (our sandbox) and by transformers must agree character for character.
    inline = ChatTemplateRenderer(qwen_tokenizer, qwen_tokenizer.chat_template)
    assert inline.origin == "inline"
    hf = ChatTemplateRenderer(qwen_tokenizer)
    for kwargs in ({}, {"enable_thinking": False}):
        assert inline.render(CHAT, tools=TOOLS, **kwargs) == hf.render(CHAT, tools=TOOLS, **kwargs)


def test_builtin_qwen_matches_the_reference_qwen_template(qwen_tokenizer: Any) -> None:
    # shared/test-models' template follows Qwen3's own; for a chat without reasoning both must agree.
    builtin = ChatTemplateRenderer(qwen_tokenizer, "qwen")
    hf = ChatTemplateRenderer(qwen_tokenizer)
    for tools in (TOOLS, None):
        for kwargs in ({}, {"enable_thinking": False}):
            assert builtin.render(CHAT, tools=tools, **kwargs) == hf.render(CHAT, tools=tools, **kwargs)


def test_tokenizer_template_errors_are_render_errors(qwen_tokenizer: Any) -> None:
    original = qwen_tokenizer.chat_template
    qwen_tokenizer.chat_template = (
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
        "{% endif %}{{ m.content }}{% endfor %}"
    )
    try:
        renderer = ChatTemplateRenderer(qwen_tokenizer)
        assert renderer.origin == "tokenizer"
        assert renderer.render([{"role": "user", "content": "a"}]) == "a"
        with pytest.raises(TemplateRenderError, match="Conversation roles must alternate"):
            renderer.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    finally:
        qwen_tokenizer.chat_template = original
    with pytest.raises(TemplateRenderError):  # transformers' own checks fail the same way
        ChatTemplateRenderer(qwen_tokenizer).render([{"role": "user", "content": "x"}], tools=[5])  # type: ignore[list-item]


def test_tools_list_is_serialised_with_plain_json(qwen_tokenizer: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "say",
                "description": "Say <b>ünïcode</b> & more",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    text = ChatTemplateRenderer(qwen_tokenizer).render([{"role": "user", "content": "x"}], tools=tools)
    assert json.dumps(tools[0], ensure_ascii=False) in text


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES)
def test_builtins_render_the_same_under_transformers(qwen_tokenizer: Any, name: str) -> None:
    # A built-in copied into a tokenizer_config.json must behave exactly as it does here.
    ours = ChatTemplateRenderer(qwen_tokenizer, name)
    original = qwen_tokenizer.chat_template
    qwen_tokenizer.chat_template = builtin_template_source(name)
    try:
        theirs = ChatTemplateRenderer(qwen_tokenizer)
        for add in (True, False):
            kwargs: dict[str, Any] = {"add_generation_prompt": add, "current_date": "2025-01-01"}
            assert ours.render(CHAT, tools=TOOLS, **kwargs) == theirs.render(CHAT, tools=TOOLS, **kwargs)
    finally:
        qwen_tokenizer.chat_template = original


FIXTURE_TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "templates").glob("*.jinja"))


@pytest.mark.parametrize("path", FIXTURE_TEMPLATES, ids=[p.stem for p in FIXTURE_TEMPLATES])
def test_family_templates_inline_match_transformers(qwen_tokenizer: Any, path: Path) -> None:
    # The test models' family templates (Qwen3-Coder needs object arguments, DeepSeek glues strings...) give
    # the same prompt through our sandbox as through transformers, from the same OpenAI-shaped messages.
    source = path.read_text(encoding="utf-8")
    original, original_bos = qwen_tokenizer.chat_template, qwen_tokenizer.bos_token
    qwen_tokenizer.chat_template = source
    qwen_tokenizer.bos_token = "<|endoftext|>"  # some families glue `bos_token + ...`
    try:
        ours = ChatTemplateRenderer(qwen_tokenizer, source)
        theirs = ChatTemplateRenderer(qwen_tokenizer)
        decoded = copy.deepcopy(CHAT)  # what the test models were trained on: arguments json-decoded
        decoded[2]["tool_calls"][0]["function"]["arguments"] = {"location": "Paris"}
        for add in (True, False):
            expected = theirs.render(CHAT, tools=TOOLS, add_generation_prompt=add)
            assert ours.render(CHAT, tools=TOOLS, add_generation_prompt=add) == expected
            assert "get_weather" in expected and "Paris" in expected and "18 C, sunny" in expected
            assert expected == qwen_tokenizer.apply_chat_template(
                decoded, tools=TOOLS, add_generation_prompt=add, tokenize=False
            )
    finally:
        qwen_tokenizer.chat_template = original
        qwen_tokenizer.bos_token = original_bos


def test_a_template_that_reads_only_parts_gets_every_content_as_parts() -> None:
    source = (Path(__file__).parents[1] / "fixtures" / "templates" / "vision" / "idefics3.jinja").read_text()
    renderer = ChatTemplateRenderer(fake_tokenizer(), source)
    chat = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
    ]
    assert renderer.render(chat) == (
        "<|im_start|>User: Hello there<end_of_utterance>\nAssistant: Hi<end_of_utterance>\n"
        "User:<image>And this?<end_of_utterance>\nAssistant:"
    )
    # templates that take strings keep getting strings
    assert ChatTemplateRenderer(fake_tokenizer(), "chatml").render([{"role": "user", "content": "x"}]).count("x") == 1
