# ruff: noqa: E501 (verbatim model outputs read better unbroken)
"""Tool-call outputs of real models, with what a client must get from them.

Each group cites where the output comes from. Texts are the decoded model output after the prompt (EOS
stripped, as the serving layer does). Loaded by path from the tests (this folder is not a package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def fn(name: str, properties: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An OpenAI chat tool."""
    parameters = {"type": "object", "properties": properties or {}, "required": list(required)}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


STR, INT, NUM, BOOL, OBJ = (
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "object"},
)
WEATHER = fn(
    "get_current_weather",
    {"city": STR, "state": STR, "unit": {"type": "string", "enum": ["fahrenheit", "celsius"]}},
    ("city", "state"),
)
AREA = fn("calculate_area", {"shape": STR, "dimensions": OBJ, "precision": INT})
TEMPERATURE = fn("get_current_temperature", {"location": STR, "unit": STR}, ("location",))
TEMPERATURE_DATE = fn("get_temperature_date", {"location": STR, "date": STR, "unit": STR}, ("location", "date"))
FINAL_ANSWER = fn("final_answer", {"trigger": BOOL}, ("trigger",))
SEARCH = fn("searchTool", {"query": STR, "limit": INT}, ("query",))
INCIDENTS = fn("getOpenIncidentsTool")
ADD = fn("add", {"a": NUM, "b": NUM}, ("a", "b"))
SPECIAL = fn("special_function", {"arg1": INT}, ("arg1",))
GET_WEATHER = fn("get_weather", {"location": STR}, ("location",))
CITY_WEATHER = fn("get_weather", {"city": STR, "unit": STR}, ("city",))
HOTELS = fn("search_hotels", {"location": STR, "check_in": STR}, ("location",))


@dataclass(frozen=True)
class Case:
    """One output: the parser that reads it, and the content / reasoning / calls it must yield."""

    id: str
    parser: str
    text: str
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    content: str | None = None
    reasoning: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    canonical: bool = False
    """The text is exactly the markup a required-mode grammar for `tools` forces."""
    malformed: bool = False
    """A call that names a known tool but fails later checks (eager streaming cannot take it back)."""


QWEN_PARALLEL = (
    '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA",'
    ' "date": "2024-10-01"}}\n</tool_call>'
)
CODER_DALLAS = (
    "<tool_call>\n<function=get_current_weather>\n<parameter=city>\nDallas\n</parameter>\n<parameter=state>\nTX\n"
    "</parameter>\n<parameter=unit>\nfahrenheit\n</parameter>\n</function>\n</tool_call>"
)
CODER_ORLANDO = CODER_DALLAS.replace("Dallas", "Orlando").replace("TX", "FL")
DALLAS = {"city": "Dallas", "state": "TX", "unit": "fahrenheit"}
CODER_WRONG_TYPE = (
    "<tool_call>\n<function=calculate_area>\n<parameter=precision>\ntwo\n</parameter>\n</function>\n</tool_call>"
)
DS_BEGIN, DS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
DS_TOKYO = f'{DS_CALL}function{DS_SEP}get_weather\n```json\n{{"city": "Tokyo", "unit": "celsius"}}\n```{DS_CALL_END}'
DS_HOTELS = (
    f'{DS_CALL}function{DS_SEP}search_hotels\n```json\n{{"location": "Tokyo", "check_in": "2025-01-15"}}\n```'
    f"{DS_CALL_END}"
)
HARMONY_CALL = (
    "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant<|channel|>commentary"
    ' to=functions.get_weather <|constrain|>json<|message|>{"location":"San Francisco"}<|call|>'
)
SF = {"location": "San Francisco"}

CASES: list[Case] = [
    # --- hermes: vLLM tests/tool_parsers/test_hermes_tool_parser.py
    Case(
        "hermes-plain",
        "hermes",
        "This is some prior text that has nothing to do with tool calling.",
        content="This is some prior text that has nothing to do with tool calling.",
    ),
    Case(
        "hermes-bool",
        "hermes",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}\n</tool_call>',
        calls=(("final_answer", {"trigger": True}),),
        tools=(FINAL_ANSWER,),
        canonical=True,
    ),
    Case(
        "hermes-no-newlines",
        "hermes",
        '<tool_call>{"name": "get_current_temperature","arguments": {"location":"San Francisco, California, United'
        ' States", "unit": "celsius"}}</tool_call>',
        calls=(
            (
                "get_current_temperature",
                {"location": "San Francisco, California, United States", "unit": "celsius"},
            ),
        ),
    ),
    Case(
        "hermes-content-first",
        "hermes",
        'Sure, let me check the weather.<tool_call>{"name": "get_weather", "arguments": {"city": "NYC"}}</tool_call>',
        calls=(("get_weather", {"city": "NYC"}),),
        content="Sure, let me check the weather.",
    ),
    Case(
        "hermes-two-calls",
        "hermes",
        '<tool_call>{"name": "search", "arguments": {"q": "cats"}}</tool_call>'
        '<tool_call>{"name": "search", "arguments": {"q": "dogs"}}</tool_call>',
        calls=(("search", {"q": "cats"}), ("search", {"q": "dogs"})),
    ),
    Case(
        "hermes-until-eos",
        "hermes",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}',
        calls=(("final_answer", {"trigger": True}),),
    ),
    Case(
        "hermes-bad-json",
        "hermes",
        '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}',
        content='<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}',
        malformed=True,
    ),
    Case(
        "hermes-serialized-args",
        "hermes",
        '<tool_call>\n{"name": "get_db_config", "arguments": "{\\"param\\": \\"max_connections\\"}"}\n</tool_call>',
        calls=(("get_db_config", {"param": "max_connections"}),),
    ),
    # --- hermes: Qwen function-calling guide (qwen.readthedocs.io/en/latest/framework/function_call.html)
    Case(
        "hermes-qwen-docs-parallel",
        "hermes",
        QWEN_PARALLEL,
        calls=(
            ("get_current_temperature", {"location": "San Francisco, CA, USA"}),
            ("get_temperature_date", {"location": "San Francisco, CA, USA", "date": "2024-10-01"}),
        ),
        tools=(TEMPERATURE, TEMPERATURE_DATE),
        canonical=True,
    ),
    # --- hermes: our own malformed variants of the guide's output (must come back as text)
    Case(
        "hermes-unknown-function",
        "hermes",
        QWEN_PARALLEL.split("\n<tool_call>")[0].replace("get_current_", "get_"),
        content=QWEN_PARALLEL.split("\n<tool_call>")[0].replace("get_current_", "get_"),
        tools=(TEMPERATURE,),
    ),
    Case(
        "hermes-schema-violation",
        "hermes",
        '<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "Paris"}}\n</tool_call>',
        content='<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "Paris"}}\n</tool_call>',
        tools=(TEMPERATURE_DATE,),
        malformed=True,
    ),
    Case(
        "hermes-text-around",
        "hermes",
        'Let me check.\n<tool_call>\n{"name": "final_answer", "arguments": {"trigger": false}}\n</tool_call>\nDone.',
        calls=(("final_answer", {"trigger": False}),),
        content="Let me check.\n\nDone.",
        tools=(FINAL_ANSWER,),
    ),
    Case("hermes-tag-lookalike", "hermes", "Use <tool to call <tool_cal", content="Use <tool to call <tool_cal"),
    # --- qwen3_coder: vLLM tests/tool_parsers/test_qwen3coder_tool_parser.py (template: Qwen3-Coder chat_template)
    Case(
        "coder-single",
        "qwen3_coder",
        CODER_DALLAS,
        calls=(("get_current_weather", DALLAS),),
        tools=(WEATHER, AREA),
        canonical=True,
    ),
    Case(
        "coder-content-first",
        "qwen3_coder",
        "Sure! Let me check the weather for you." + CODER_DALLAS,
        calls=(("get_current_weather", DALLAS),),
        content="Sure! Let me check the weather for you.",
        tools=(WEATHER, AREA),
    ),
    Case(
        "coder-multiline-object",
        "qwen3_coder",
        "<tool_call>\n<function=calculate_area>\n<parameter=shape>\nrectangle\n</parameter>\n<parameter=dimensions>\n"
        '{"width": 10, \n "height": 20}\n</parameter>\n<parameter=precision>\n2\n</parameter>\n</function>\n</tool_call>',
        calls=(
            (
                "calculate_area",
                {"shape": "rectangle", "dimensions": {"width": 10, "height": 20}, "precision": 2},
            ),
        ),
        tools=(WEATHER, AREA),
    ),
    Case(
        "coder-parallel",
        "qwen3_coder",
        CODER_DALLAS + "\n" + CODER_ORLANDO,
        calls=(
            ("get_current_weather", DALLAS),
            ("get_current_weather", {**DALLAS, "city": "Orlando", "state": "FL"}),
        ),
        tools=(WEATHER, AREA),
        canonical=True,
    ),
    Case(
        "coder-types",
        "qwen3_coder",
        "<tool_call>\n<function=test_types>\n<parameter=int_param>\n42\n</parameter>\n<parameter=float_param>\n3.14\n"
        "</parameter>\n<parameter=bool_param>\ntrue\n</parameter>\n<parameter=str_param>\nhello world\n</parameter>\n"
        '<parameter=obj_param>\n{"key": "value"}\n</parameter>\n</function>\n</tool_call>',
        calls=(
            (
                "test_types",
                {
                    "int_param": 42,
                    "float_param": 3.14,
                    "bool_param": True,
                    "str_param": "hello world",
                    "obj_param": {"key": "value"},
                },
            ),
        ),
        tools=(
            fn(
                "test_types",
                {
                    "int_param": INT,
                    "float_param": NUM,
                    "bool_param": BOOL,
                    "str_param": STR,
                    "obj_param": OBJ,
                },
            ),
        ),
        canonical=True,
    ),
    Case(
        "coder-bare-function",
        "qwen3_coder",
        "<function=get_current_weather>\n<parameter=city>\nDallas\n</parameter>\n<parameter=state>\nTX\n</parameter>\n"
        "</function>",
        calls=(("get_current_weather", {"city": "Dallas", "state": "TX"}),),
        tools=(WEATHER,),
    ),
    Case(
        "coder-nullable",
        "qwen3_coder",
        "<tool_call>\n<function=test_anyof>\n<parameter=anyof_int>\n5\n</parameter>\n<parameter=anyof_str>\nnull\n"
        "</parameter>\n</function>\n</tool_call>",
        calls=(("test_anyof", {"anyof_int": 5, "anyof_str": None}),),
        tools=(
            fn(
                "test_anyof",
                {
                    "anyof_int": {"anyOf": [INT, {"type": "null"}]},
                    "anyof_str": {"anyOf": [STR, {"type": "null"}]},
                },
            ),
        ),
    ),
    # --- qwen3_coder: our own variants (code with markup-like characters; malformed calls)
    Case(
        "coder-code-value",
        "qwen3_coder",
        "<tool_call>\n<function=write_file>\n<parameter=path>\na.py\n</parameter>\n<parameter=content>\n"
        "def f(x):\n    return x < 3 and '<p>'\n\n</parameter>\n</function>\n</tool_call>",
        calls=(("write_file", {"path": "a.py", "content": "def f(x):\n    return x < 3 and '<p>'\n"}),),
        tools=(fn("write_file", {"path": STR, "content": STR}, ("path", "content")),),
        canonical=True,
    ),
    Case(
        "coder-unknown-function",
        "qwen3_coder",
        CODER_DALLAS.replace("get_current_weather", "get_weather"),
        content=CODER_DALLAS.replace("get_current_weather", "get_weather"),
        tools=(WEATHER,),
    ),
    Case(
        "coder-wrong-type",
        "qwen3_coder",
        CODER_WRONG_TYPE,
        content=CODER_WRONG_TYPE,
        tools=(AREA,),
        malformed=True,
    ),
    # --- llama3_json: vLLM tests/tool_parsers/test_llama3_json_tool_parser.py
    Case(
        "llama-args",
        "llama3_json",
        '{"name": "searchTool", "parameters": {"query": "test query", "limit": 10}}',
        calls=(("searchTool", {"query": "test query", "limit": 10}),),
        tools=(SEARCH, INCIDENTS),
        canonical=True,
    ),
    Case(
        "llama-no-json",
        "llama3_json",
        "This is just some text without any tool calls",
        content="This is just some text without any tool calls",
    ),
    Case(
        "llama-invalid-json",
        "llama3_json",
        '{"name": "invalidTool", "parameters": {invalid json}',
        content='{"name": "invalidTool", "parameters": {invalid json}',
        malformed=True,
    ),
    Case(
        "llama-arguments-key",
        "llama3_json",
        '{"name": "searchTool", "arguments": {"query": "test"}}',
        calls=(("searchTool", {"query": "test"}),),
    ),
    Case(
        "llama-semicolons",
        "llama3_json",
        '{"name": "searchTool", "parameters": {"query": "test1"}}; {"name": "getOpenIncidentsTool", "parameters": {}};'
        ' {"name": "searchTool", "parameters": {"query": "test2"}}',
        calls=(
            ("searchTool", {"query": "test1"}),
            ("getOpenIncidentsTool", {}),
            ("searchTool", {"query": "test2"}),
        ),
        tools=(SEARCH, INCIDENTS),
        canonical=True,
    ),
    Case(
        "llama-newline",
        "llama3_json",
        '{"name": "searchTool", "parameters": {"query": "test1"}}\n{"name": "getOpenIncidentsTool", "parameters": {}}',
        calls=(("searchTool", {"query": "test1"}), ("getOpenIncidentsTool", {})),
    ),
    Case(
        "llama-surrounding-text",
        "llama3_json",
        'Here is the result: {"name": "getOpenIncidentsTool", "parameters": {}} Would you like to know more?',
        calls=(("getOpenIncidentsTool", {}),),
        content="Here is the result:  Would you like to know more?",
    ),
    Case(
        "llama-quotes-and-braces",
        "llama3_json",
        '{"name": "parserTool", "parameters": {"text": "He said \\"Hello {world}\\"", "q": "test {value} [complex]"}}',
        calls=(("parserTool", {"text": 'He said "Hello {world}"', "q": "test {value} [complex]"}),),
    ),
    Case("llama-missing-name", "llama3_json", '{"parameters": {}}', content='{"parameters": {}}'),
    Case(
        "llama-missing-parameters",
        "llama3_json",
        '{"name": "toolWithoutParams"}',
        content='{"name": "toolWithoutParams"}',
        malformed=True,
    ),
    # --- llama3_json: the `<|python_tag|>` forms of the Llama 3.1 prompt format
    #     (meta-llama/llama-models models/llama3_1/prompt_format.md; built-in tools are not ours)
    Case(
        "llama-python-tag",
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"location": "Menlo Park"}}',
        calls=(("get_weather", {"location": "Menlo Park"}),),
        tools=(GET_WEATHER,),
    ),
    Case(
        "llama-builtin-tool",
        "llama3_json",
        '<|python_tag|>brave_search.call(query="current weather in Menlo Park")',
        content='<|python_tag|>brave_search.call(query="current weather in Menlo Park")',
    ),
    # --- mistral, before v11: vLLM tests/tool_parsers/test_mistral_tool_parser.py (pre_v11 cases)
    Case(
        "mistral-add",
        "mistral",
        '[TOOL_CALLS][{"name": "add", "arguments":{"a": 3.5, "b": 4}}]',
        calls=(("add", {"a": 3.5, "b": 4}),),
        tools=(ADD,),
        canonical=True,
    ),
    Case(
        "mistral-space",
        "mistral",
        '[TOOL_CALLS] [{"name": "get_current_weather", "arguments":{"city": "San Francisco", "state": "CA",'
        ' "unit": "celsius"}}]',
        calls=(("get_current_weather", {"city": "San Francisco", "state": "CA", "unit": "celsius"}),),
        tools=(WEATHER,),
        canonical=True,
    ),
    Case(
        "mistral-args-first",
        "mistral",
        '[TOOL_CALLS] [{"arguments":{"name": "John Doe"}, "name": "get_age"}]',
        calls=(("get_age", {"name": "John Doe"}),),
    ),
    Case(
        "mistral-loose-spacing",
        "mistral",
        '[TOOL_CALLS]  [ {"name":"add" , "arguments" : {"a": 3, "b": 4} } ]',
        calls=(("add", {"a": 3, "b": 4}),),
        tools=(ADD,),
    ),
    Case(
        "mistral-two",
        "mistral",
        '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 3.5, "b": 4}}, {"name": "get_current_weather",'
        ' "arguments":{"city": "San Francisco", "state": "CA", "unit": "celsius"}}]',
        calls=(
            ("add", {"a": 3.5, "b": 4}),
            ("get_current_weather", {"city": "San Francisco", "state": "CA", "unit": "celsius"}),
        ),
        tools=(ADD, WEATHER),
        canonical=True,
    ),
    Case(
        "mistral-content-first",
        "mistral",
        'Hello[TOOL_CALLS] [{"name": "add", "arguments":{"a": 1, "b": 2}}]',
        calls=(("add", {"a": 1, "b": 2}),),
        content="Hello",
    ),
    Case("mistral-not-json", "mistral", "[TOOL_CALLS] not json at all", content="[TOOL_CALLS] not json at all"),
    # --- mistral, v11+: vLLM test_mistral_tool_parser.py (v11 cases decode with [ARGS] skipped) and
    #     llama.cpp tests/test-chat.cpp (`[TOOL_CALLS]special_function[ARGS]{"arg1":1}`)
    Case(
        "mistral-v11-skipped-args",
        "mistral",
        '[TOOL_CALLS]add_this_and_that{"a": 3.5, "b": 4}',
        calls=(("add_this_and_that", {"a": 3.5, "b": 4}),),
    ),
    Case(
        "mistral-v11-two",
        "mistral",
        '[TOOL_CALLS]add{"a": 3.5, "b": 4}[TOOL_CALLS]multiply{"a": 3, "b": 6}',
        calls=(("add", {"a": 3.5, "b": 4}), ("multiply", {"a": 3, "b": 6})),
    ),
    Case(
        "mistral-v11-same-name-twice",
        "mistral",
        '[TOOL_CALLS]add{"a": 3.5, "b": 4}[TOOL_CALLS]add{"a": 3, "b": 6}',
        calls=(("add", {"a": 3.5, "b": 4}), ("add", {"a": 3, "b": 6})),
    ),
    Case(
        "mistral-v11-content-first",
        "mistral",
        'hi{hi[TOOL_CALLS]bash{"command": "print(\\"hello world!\\")"}',
        calls=(("bash", {"command": 'print("hello world!")'}),),
        content="hi{hi",
    ),
    Case(
        "mistral-v11-args-token",
        "mistral",
        '[TOOL_CALLS]special_function[ARGS]{"arg1":1}',
        calls=(("special_function", {"arg1": 1}),),
        tools=(SPECIAL,),
        canonical=True,
    ),
    Case(
        "mistral-v13-call-id",
        "mistral",
        '[TOOL_CALLS]special_function[CALL_ID]123456789[ARGS]{"arg1":1}[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}',
        calls=(("special_function", {"arg1": 1}), ("add", {"a": 1, "b": 2})),
        tools=(SPECIAL, ADD),
    ),
    Case(
        "mistral-v11-schema-violation",
        "mistral",
        '[TOOL_CALLS]special_function[ARGS]{"arg1":"one"}',
        content='[TOOL_CALLS]special_function[ARGS]{"arg1":"one"}',
        tools=(SPECIAL,),
        malformed=True,
    ),
    # --- deepseek_v3 (V3 / R1): vLLM tests/tool_parsers/test_deepseekv3_tool_parser.py
    Case(
        "deepseek-single",
        "deepseek_v3",
        DS_BEGIN + DS_TOKYO + DS_END,
        calls=(("get_weather", {"city": "Tokyo", "unit": "celsius"}),),
        tools=(CITY_WEATHER, HOTELS),
        canonical=True,
    ),
    Case(
        "deepseek-parallel",
        "deepseek_v3",
        DS_BEGIN + DS_TOKYO + DS_HOTELS + DS_END,
        calls=(
            ("get_weather", {"city": "Tokyo", "unit": "celsius"}),
            ("search_hotels", {"location": "Tokyo", "check_in": "2025-01-15"}),
        ),
        tools=(CITY_WEATHER, HOTELS),
        canonical=True,
    ),
    Case(
        "deepseek-empty-args",
        "deepseek_v3",
        f"{DS_BEGIN}{DS_CALL}function{DS_SEP}get_current_time\n```json\n{{}}\n```{DS_CALL_END}{DS_END}",
        calls=(("get_current_time", {}),),
    ),
    Case(
        "deepseek-text-first",
        "deepseek_v3",
        f'Let me check the weather for you.{DS_BEGIN}{DS_CALL}function{DS_SEP}get_weather\n```json\n{{"city": "Paris"}}'
        f"\n```{DS_CALL_END}{DS_END}",
        calls=(("get_weather", {"city": "Paris"}),),
        content="Let me check the weather for you.",
    ),
    Case(
        "deepseek-escapes",
        "deepseek_v3",
        f'{DS_BEGIN}{DS_CALL}function{DS_SEP}send_message\n```json\n{{"text": "He said \\"hello\\"", "path": '
        f'"C:\\\\Users\\\\file", "newline": "line1\\nline2"}}\n```{DS_CALL_END}{DS_END}',
        calls=(
            (
                "send_message",
                {"text": 'He said "hello"', "path": "C:\\Users\\file", "newline": "line1\nline2"},
            ),
        ),
    ),
    Case(
        "deepseek-unclosed-json",
        "deepseek_v3",
        f'{DS_BEGIN}{DS_CALL}function{DS_SEP}get_weather\n```json\n{{"city": "Tokyo"\n```{DS_CALL_END}{DS_END}',
        content=f'{DS_CALL}function{DS_SEP}get_weather\n```json\n{{"city": "Tokyo"\n```{DS_CALL_END}',
        malformed=True,
    ),
    # --- deepseek_v3 (V3.1 layout): vLLM tests/tool_parsers/test_deepseekv31_tool_parser.py
    Case(
        "deepseek-v31",
        "deepseek_v3",
        f'some prefix text{DS_BEGIN}{DS_CALL}foo{DS_SEP}{{"x":1}}{DS_CALL_END}{DS_CALL}bar{DS_SEP}{{"y":2}}'
        f"{DS_CALL_END}{DS_END} some suffix text",
        calls=(("foo", {"x": 1}), ("bar", {"y": 2})),
        content="some prefix text some suffix text",
    ),
    Case(
        "deepseek-v31-canonical",
        "deepseek_v3",
        f'{DS_BEGIN}{DS_CALL}get_weather{DS_SEP}{{"location": "Tokyo"}}{DS_CALL_END}{DS_END}',
        calls=(("get_weather", {"location": "Tokyo"}),),
        tools=(GET_WEATHER,),
        canonical=True,
    ),
    # --- harmony: openai/harmony docs/format.md ("Receiving tool calls", "Reasoning", "Preambles")
    Case(
        "harmony-call",
        "harmony",
        HARMONY_CALL,
        calls=(("get_weather", SF),),
        reasoning="Need to use function get_weather.",
        tools=(GET_WEATHER,),
        canonical=True,
    ),
    Case(
        "harmony-call-eos-stripped",
        "harmony",
        HARMONY_CALL.removesuffix("<|call|>"),
        calls=(("get_weather", SF),),
        reasoning="Need to use function get_weather.",
    ),
    Case(
        "harmony-final",
        "harmony",
        '<|channel|>analysis<|message|>User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.<|end|>'
        "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>",
        content="2 + 2 = 4.",
        reasoning='User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.',
    ),
    Case(
        "harmony-final-eos-stripped",
        "harmony",
        "<|channel|>analysis<|message|>Simple arithmetic.<|end|><|start|>assistant<|channel|>final<|message|>2 + 2 = 4.",
        content="2 + 2 = 4.",
        reasoning="Simple arithmetic.",
    ),
    Case(
        "harmony-preamble",
        "harmony",
        "<|channel|>analysis<|message|>{long chain of thought}<|end|><|start|>assistant<|channel|>commentary<|message|>"
        "**Action plan**:\n1. Generate an HTML file\n---\nWill start executing the plan step by step<|end|><|start|>"
        'assistant<|channel|>commentary to=functions.generate_file<|constrain|>json<|message|>{"template": '
        '"basic_html", "path": "index.html"}<|call|>',
        calls=(("generate_file", {"template": "basic_html", "path": "index.html"}),),
        content="**Action plan**:\n1. Generate an HTML file\n---\nWill start executing the plan step by step",
        reasoning="{long chain of thought}",
    ),
    Case(
        "harmony-recipient-in-role",
        "harmony",
        "<|channel|>analysis<|message|>Use the tool.<|end|><|start|>assistant to=functions.get_weather<|channel|>"
        'commentary json<|message|>{"location": "Paris"}<|call|>',
        calls=(("get_weather", {"location": "Paris"}),),
        reasoning="Use the tool.",
        tools=(GET_WEATHER,),
    ),
    # --- harmony: vLLM tests/tool_parsers/test_openai_tool_parser.py (several calls, then a final answer)
    Case(
        "harmony-two-calls-and-final",
        "harmony",
        "<|channel|>analysis<|message|>We need both tools.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_current_weather <|constrain|>json<|message|>{"location": "Tokyo"}<|call|><|start|>assistant'
        '<|channel|>commentary to=functions.get_user_location <|constrain|>json<|message|>{"location": "Tokyo"}<|call|>'
        "<|start|>assistant<|channel|>final<|message|>This tool call will get the weather.",
        calls=(("get_current_weather", {"location": "Tokyo"}), ("get_user_location", {"location": "Tokyo"})),
        content="This tool call will get the weather.",
        reasoning="We need both tools.",
    ),
    # --- harmony: our own malformed variants and plain text
    Case(
        "harmony-unknown-function",
        "harmony",
        HARMONY_CALL.replace("get_weather <", "get_time <"),
        content=HARMONY_CALL.replace("get_weather <", "get_time <").split("<|end|>")[1],
        reasoning="Need to use function get_weather.",
        tools=(GET_WEATHER,),
    ),
    Case(
        "harmony-bad-json",
        "harmony",
        HARMONY_CALL.replace('"San Francisco"}', '"San Francisco"'),
        content=HARMONY_CALL.replace('"San Francisco"}', '"San Francisco"').split("<|end|>")[1],
        reasoning="Need to use function get_weather.",
        tools=(GET_WEATHER,),
        malformed=True,
    ),
    Case("harmony-plain-text", "harmony", "Hello! How can I help?", content="Hello! How can I help?"),
]
