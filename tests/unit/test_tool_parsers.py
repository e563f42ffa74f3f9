"""Tool-call parsers, from tables of real model outputs (tests/unit/data/parser_cases/tool_cases.py).

Every case is read whole (`parse`) and streamed (one character at a time and in random chunks); both must
give the table's answer. Grammars are checked with llguidance and a real (tiny, offline) tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ParsedOutput,
    ToolCallArgsDelta,
    ToolCallStart,
    collect,
)
from mlx_router.parsing.registry import (
    TOOL_PARSERS,
    UnknownParserError,
    detect_tool_parser,
    get_tool_parser,
)
from mlx_router.parsing.tools.base import ToolCallParser

_spec = importlib.util.spec_from_file_location(
    "parser_tool_cases", Path(__file__).parent / "data" / "parser_cases" / "tool_cases.py"
)
assert _spec is not None and _spec.loader is not None
cases = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cases  # dataclasses look their module up while the table is built
_spec.loader.exec_module(cases)
CASES = cases.CASES
Case = cases.Case


def make(case: Any, eager: bool = False) -> ToolCallParser:
    return get_tool_parser(case.parser)(list(case.tools) or None, eager=eager)  # type: ignore[call-arg]


def stream(parser: ToolCallParser, chunks: list[str]) -> list[OutputEvent]:
    events: list[OutputEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.finish()


def random_chunks(text: str, seed: int) -> list[str]:
    rng, chunks, pos = random.Random(seed), [], 0
    while pos < len(text):
        size = rng.randint(1, 12)
        chunks.append(text[pos : pos + size])
        pos += size
    return chunks


def summary(parsed: ParsedOutput) -> tuple[Any, ...]:
    """What a client sees, with arguments as exact strings."""
    return parsed.content, parsed.reasoning, [(c.name, c.arguments) for c in parsed.tool_calls]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parse_gives_the_table_answer(case: Any) -> None:
    parsed = make(case).parse(case.text)
    assert parsed.content == case.content
    assert parsed.reasoning == case.reasoning
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == list(case.calls)
    assert all(isinstance(json.loads(c.arguments), dict) for c in parsed.tool_calls)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_stream_agrees_with_parse(case: Any) -> None:
    expected = summary(make(case).parse(case.text))
    assert summary(collect(stream(make(case), list(case.text)))) == expected
    for seed in range(4):
        assert summary(collect(stream(make(case), random_chunks(case.text, seed)))) == expected, seed


@pytest.mark.parametrize("case", [c for c in CASES if not c.malformed], ids=lambda c: c.id)
def test_eager_stream_agrees_with_parse(case: Any) -> None:
    expected = summary(make(case).parse(case.text))
    assert summary(collect(stream(make(case, eager=True), list(case.text)))) == expected


@pytest.mark.parametrize("case", [c for c in CASES if c.calls and c.content is not None], ids=lambda c: c.id)
def test_markup_never_reaches_content(case: Any) -> None:
    parser = make(case)
    events = stream(parser, list(case.text))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    for marker in (*parser.markers, *parser.call_openers):
        if marker not in case.content:
            assert marker not in content


def test_calls_come_in_order_with_unique_ids() -> None:
    case = next(c for c in CASES if c.id == "llama-semicolons")
    events = stream(make(case), random_chunks(case.text, 7))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.index for s in starts] == [0, 1, 2]
    assert [s.name for s in starts] == ["searchTool", "getOpenIncidentsTool", "searchTool"]
    assert len({s.id for s in starts}) == 3 and all(s.id.startswith("call_") for s in starts)


# (parser, text before the call, the call) - the text must stream before the call is complete
TEXT_THEN_CALL = [
    ("hermes", "Sure, let me check.", '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'),
    ("qwen3_coder", "Sure, let me check.", "<tool_call>\n<function=f>\n</function>\n</tool_call>"),
    ("llama3_json", "Sure, let me check.", '{"name": "f", "parameters": {}}'),
    ("mistral", "Sure, let me check.", '[TOOL_CALLS]f[ARGS]{"a": 1}'),
    (
        "deepseek_v3",
        "Sure, let me check.",
        f"{cases.DS_BEGIN}{cases.DS_CALL}f{cases.DS_SEP}{{}}{cases.DS_CALL_END}",
    ),
]


@pytest.mark.parametrize(("name", "before", "call"), TEXT_THEN_CALL)
def test_text_before_a_call_streams_as_it_arrives(name: str, before: str, call: str) -> None:
    parser = get_tool_parser(name)()
    assert parser.feed(before) == [ContentDelta(before)]
    for index in range(len(call) - 1):  # no part of the markup is ever sent as content
        assert not any(isinstance(e, ContentDelta) for e in parser.feed(call[index]))
    events = parser.feed(call[-1]) + parser.finish()
    assert [e.name for e in events if isinstance(e, ToolCallStart)] == ["f"]


def test_only_a_possible_marker_is_held_back() -> None:
    parser = get_tool_parser("hermes")()
    assert parser.feed("a <tool") == [ContentDelta("a ")]
    assert parser.feed("box> b") == [ContentDelta("<toolbox> b")]


# (case id, text up to just after the name and part of the arguments)
EAGER = [
    ("hermes-bool", '<tool_call>\n{"name": "final_answer", "arguments": {"tri'),
    ("coder-single", "<tool_call>\n<function=get_current_weather>\n<parameter=city>\nDallas\n</parameter>\n"),
    ("llama-args", '{"name": "searchTool", "parameters": {"query": "te'),
    ("mistral-two", '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 3'),
    ("mistral-v11-args-token", '[TOOL_CALLS]special_function[ARGS]{"ar'),
    (
        "deepseek-single",
        f'{cases.DS_BEGIN}{cases.DS_CALL}function{cases.DS_SEP}get_weather\n```json\n{{"city',
    ),
    ("harmony-call", cases.HARMONY_CALL.split('"San')[0]),
]


@pytest.mark.parametrize(("case_id", "prefix"), EAGER)
def test_eager_mode_starts_a_call_when_its_name_is_known(case_id: str, prefix: str) -> None:
    case = next(c for c in CASES if c.id == case_id)
    parser = make(case, eager=True)
    early = [e for ch in prefix for e in parser.feed(ch)]
    starts = [e for e in early if isinstance(e, ToolCallStart)]
    assert [s.name for s in starts] == [case.calls[0][0]]
    rest = [e for ch in case.text[len(prefix) :] for e in parser.feed(ch)] + parser.finish()
    fragments = [e.text for e in early + rest if isinstance(e, ToolCallArgsDelta) and e.index == 0]
    assert len(fragments) > 1
    assert "".join(fragments) == make(case).parse(case.text).tool_calls[0].arguments


@pytest.mark.parametrize("name", list(TOOL_PARSERS))
def test_truncated_outputs_never_raise_and_still_agree(name: str) -> None:
    texts = [c.text for c in CASES if c.parser == name]
    for text in texts:
        for cut in range(0, len(text), 3):
            part = text[:cut]
            parser = get_tool_parser(name)()
            assert summary(collect(stream(parser, random_chunks(part, cut)))) == summary(parser.parse(part))


@pytest.mark.parametrize("name", list(TOOL_PARSERS))
def test_garbage_never_raises(name: str) -> None:
    parser_class = get_tool_parser(name)
    pieces = [
        *parser_class.markers,
        *parser_class.call_openers,
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        ":",
        ",",
        "\n",
        " ",
        '"name"',
        "x",
        "function",
        "=",
        ">",
        "<",
        "```json",
        "to=functions.f",
        "analysis",
        "final",
    ]
    rng = random.Random(name)
    for _ in range(150):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        whole = parser_class().parse(text)
        assert summary(collect(stream(parser_class(), random_chunks(text, 1)))) == summary(whole)


def test_registry_names_and_unknown_names() -> None:
    for name in TOOL_PARSERS:
        assert get_tool_parser(name).name == name
    with pytest.raises(UnknownParserError) as error:
        get_tool_parser("hermez")
    assert isinstance(error.value, ValueError)
    assert "hermez" in str(error.value) and all(name in str(error.value) for name in TOOL_PARSERS)


QWEN3_CODER_TEMPLATE = "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n"
QWEN25_TEMPLATE = "For each function call, return a json object with function name and arguments within <tool_call>"
LLAMA31_TEMPLATE = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
)


@pytest.mark.parametrize(
    ("template", "vocab", "expected"),
    [
        (None, {"<|channel|>", "<|message|>", "<|start|>"}, "harmony"),  # gpt-oss (o200k_harmony)
        (None, {"<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>"}, "deepseek_v3"),
        (None, {"[TOOL_CALLS]", "[INST]"}, "mistral"),
        (QWEN3_CODER_TEMPLATE, {"<tool_call>", "</tool_call>"}, "qwen3_coder"),
        (QWEN25_TEMPLATE, {"<tool_call>", "</tool_call>"}, "hermes"),
        (None, {"<tool_call>", "</tool_call>"}, "hermes"),
        (LLAMA31_TEMPLATE, {"<|eot_id|>"}, "llama3_json"),
        (None, {"<|python_tag|>", "<|eom_id|>"}, "llama3_json"),
        ("{{ messages }}", {"hello"}, None),
    ],
)
def test_detect_tool_parser(template: str | None, vocab: set[str], expected: str | None) -> None:
    assert detect_tool_parser(template, vocab) == expected


# ---- grammars ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(tokenizer, llguidance tokenizer): the offline test tokenizer plus every format's markers as tokens."""
    llguidance_hf = pytest.importorskip("llguidance.hf")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from tests.fixtures.models import cached_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    for f in cached_tokenizer("qwen").iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    raw = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    markers = sorted({m for name in TOOL_PARSERS for m in get_tool_parser(name).markers} - set(raw.get_vocab()))
    raw.add_special_tokens([tokenizers.AddedToken(m, special=True, normalized=False) for m in markers])
    raw.save(str(out / "tokenizer.json"))
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder")  # tokenizer.json now lists every added token
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    return tokenizer, llguidance_hf.from_tokenizer(tokenizer)


def accepts(guided: Any, grammar: str, text: str) -> bool:
    from llguidance import LLMatcher

    tokenizer, lltokenizer = guided
    compiled = LLMatcher.grammar_from_lark(grammar)
    assert LLMatcher.validate_grammar(compiled, lltokenizer) == ""
    matcher = LLMatcher(lltokenizer, compiled)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return matcher.try_consume_tokens(ids) == len(ids) and (matcher.is_accepting() or matcher.is_stopped())


CANONICAL = [c for c in CASES if c.canonical]
MODES = [("required", True), ("required", False), ("named", False), ("auto", True)]


@pytest.mark.parametrize("name", list(TOOL_PARSERS))
@pytest.mark.parametrize(("mode", "parallel"), MODES)
def test_every_grammar_validates(name: str, mode: str, parallel: bool) -> None:
    from llguidance import LLMatcher

    tools = [cases.WEATHER, cases.AREA, cases.FINAL_ANSWER]
    parser = get_tool_parser(name)()
    for think in (None, ("<think>", "</think>")):
        grammar = parser.grammar(tools, mode=mode, parallel=parallel, think=think)  # type: ignore[arg-type]
        assert LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(grammar)) == ""


@pytest.mark.parametrize("case", CANONICAL, ids=lambda c: c.id)
def test_grammar_accepts_what_parse_reads(guided: Any, case: Any) -> None:
    parser, special = make(case), guided[0].get_added_vocab()
    assert [c.name for c in parser.parse(case.text).tool_calls] == [name for name, _ in case.calls]
    parallel = parser.grammar(list(case.tools), mode="required", parallel=True, special_tokens=special)
    assert accepts(guided, parallel, case.text)
    name = ("functions." if case.parser == "harmony" else "") + case.calls[0][0]  # harmony's analysis says it too
    wrong = case.text.replace(name, name.replace(case.calls[0][0], "not_a_tool"), 1)
    assert not accepts(guided, parallel, wrong)
    single = parser.grammar(list(case.tools), mode="required", parallel=False, special_tokens=special)
    assert accepts(guided, single, case.text) == (len(case.calls) == 1)
    auto = parser.grammar(list(case.tools), mode="auto", parallel=True, special_tokens=special)
    assert accepts(guided, auto, case.text)
    assert accepts(guided, auto, "Hello! No tool is needed here.") == (case.parser != "harmony")


@pytest.mark.parametrize("case", [c for c in CANONICAL if len(c.tools) > 1], ids=lambda c: c.id)
def test_named_grammar_allows_only_that_function(guided: Any, case: Any) -> None:
    parser, special = make(case), guided[0].get_added_vocab()
    first = case.calls[0][0]
    named = [t for t in case.tools if t["function"]["name"] == first]
    unused = [t for t in case.tools if t["function"]["name"] not in {name for name, _ in case.calls}]
    grammar = parser.grammar(named, mode="named", parallel=True, special_tokens=special)
    assert accepts(guided, grammar, case.text) == all(name == first for name, _ in case.calls)
    if unused:
        grammar = parser.grammar(unused, mode="named", parallel=True, special_tokens=special)
        assert not accepts(guided, grammar, case.text)


BIG_ARGS = json.dumps({"path": "a.py", "content": "\n".join(f'x{i} = {{"k": [{i}, "{i}"]}}' for i in range(800))})
BIG_CALLS = {
    "hermes": f'<tool_call>\n{{"name": "write", "arguments": {BIG_ARGS}}}\n</tool_call>',
    "llama3_json": f'{{"name": "write", "parameters": {BIG_ARGS}}}',
    "mistral": f"[TOOL_CALLS]write[ARGS]{BIG_ARGS}",
    "deepseek_v3": f"{cases.DS_BEGIN}{cases.DS_CALL}write{cases.DS_SEP}{BIG_ARGS}{cases.DS_CALL_END}",
    "harmony": f"<|channel|>commentary to=functions.write <|constrain|>json<|message|>{BIG_ARGS}<|call|>",
    "qwen3_coder": "<tool_call>\n<function=write>\n<parameter=content>\n" + BIG_ARGS + "\n</parameter>\n</function>\n"
    "</tool_call>",
}


@pytest.mark.parametrize("eager", [False, True])
@pytest.mark.parametrize("name", list(BIG_CALLS))
def test_a_long_call_streams_in_linear_time(name: str, eager: bool) -> None:
    # a 20 kB call fed 4 characters at a time; rescanning it on every token took 6-13 s per format
    import time

    text, parser = BIG_CALLS[name], get_tool_parser(name)(eager=eager)  # type: ignore[call-arg]
    started = time.perf_counter()
    events = stream(parser, [text[i : i + 4] for i in range(0, len(text), 4)])
    assert time.perf_counter() - started < 3.0
    assert [e.name for e in events if isinstance(e, ToolCallStart)] == ["write"]


@pytest.mark.parametrize("case", [c for c in CANONICAL if c.parser != "harmony"], ids=lambda c: c.id)
def test_grammar_lets_a_thinking_model_think_first(guided: Any, case: Any) -> None:
    # Qwen3 / DeepSeek-R1 write "<think>...</think>\n\n" before the call; with the block opened by the prompt
    # (in_reasoning) the output starts inside it
    parser, special, think = make(case), guided[0].get_added_vocab(), ("<think>", "</think>")
    tools = list(case.tools)
    grammar = parser.grammar(tools, mode="required", parallel=True, special_tokens=special, think=think)
    assert accepts(guided, grammar, "<think>\nI will call a tool.\n</think>\n\n" + case.text)
    assert accepts(guided, grammar, case.text)
    opened = parser.grammar(
        tools, mode="required", parallel=True, special_tokens=special, think=think, in_reasoning=True
    )
    assert accepts(guided, opened, "I will call a tool.\n</think>\n\n" + case.text)
    assert not accepts(guided, opened, "I will call a tool.\n\n" + case.text)
