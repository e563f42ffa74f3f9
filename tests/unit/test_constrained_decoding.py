"""Constrained decoding on a random tiny model: whatever the weights say, the output matches the grammar.

Generation goes through mlx-lm's own `stream_generate` and `BatchGenerator` with our `GrammarProcessor` as a
logits processor, greedy and sampled (temperature 1.0, several seeds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jsonschema
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import load
from mlx_lm.generate import BatchGenerator, stream_generate
from mlx_lm.sample_utils import make_sampler

from mlx_router.constraints.errors import InvalidGrammarError
from mlx_router.constraints.grammars import grammar_from_lark, lark_json, response_format_grammar
from mlx_router.core.constrained import ConstraintCompiler, GrammarProcessor
from tests.fixtures.models import cached_random_llm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_TOKENS = 400  # every schema below is bounded well under this, so a cut-off is a failure
SAMPLING = [(0.0, 0), (1.0, 1), (1.0, 2), (1.0, 3)]  # (temperature, seed)

PERSON = {  # nested object, enum, array, required + optional keys, pattern; default whitespace rules
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "nick": {"type": "string", "maxLength": 6},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
SHAPES = {  # top-level array, anyOf of tagged objects, compact JSON asked through x-guidance
    "x-guidance": {"whitespace_flexible": False},
    "type": "array",
    "minItems": 1,
    "maxItems": 2,
    "items": {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "circle"},
                    "r": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["kind", "r"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "kind": {"const": "square"},
                    "side": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["kind", "side"],
                "additionalProperties": False,
            },
        ]
    },
}
STEPS = {  # $defs/$ref, boolean, const
    "$defs": {
        "step": {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}, "ok": {"type": "boolean"}},
            "required": ["n", "ok"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "maxItems": 2},
        "done": {"const": True},
    },
    "required": ["steps", "done"],
    "additionalProperties": False,
}
WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CALL_HEAD = '\n{"name": "get_weather", "arguments": '
CALL_TAIL = "}\n"


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


def tool_call_grammar() -> str:
    lark = (
        f"start: <tool_call> {json.dumps(CALL_HEAD)} args {json.dumps(CALL_TAIL)} </tool_call>\n"
        f"args: {lark_json(WEATHER_ARGS)}\n"
    )
    return grammar_from_lark(lark)


@pytest.fixture(scope="session")
def model_and_tokenizer() -> tuple[Any, Any]:
    model, tokenizer = load(str(cached_random_llm("qwen")))
    return model, tokenizer


@pytest.fixture(scope="session")
def compiler(model_and_tokenizer: tuple[Any, Any]) -> ConstraintCompiler:
    return ConstraintCompiler(model_and_tokenizer[1])


@pytest.fixture(scope="session")
def prompt(model_and_tokenizer: tuple[Any, Any]) -> list[int]:
    tokenizer = model_and_tokenizer[1]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Answer in JSON."}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def closing_bias(tokenizer: Any, strength: float = 6.0) -> Callable[[mx.array, mx.array], mx.array]:
    """A processor that favours tokens closing strings and objects, so free-form JSON ends in a few tokens."""
    vocab = len(tokenizer._tokenizer)
    bias = np.zeros(vocab, dtype=np.float32)
    for i in range(vocab):
        if any(ch in tokenizer.decode([i]) for ch in '"}]'):
            bias[i] = strength
    device_bias = mx.array(bias)
    return lambda tokens, logits: logits + device_bias


def generate_solo(model_and_tokenizer, prompt, processors, temp, seed) -> tuple[str, str | None]:
    model, tokenizer = model_and_tokenizer
    mx.random.seed(seed)
    pieces, finish = [], None
    for response in stream_generate(
        model,
        tokenizer,
        mx.array(prompt),
        max_tokens=MAX_TOKENS,
        sampler=make_sampler(temp),
        logits_processors=processors,
    ):
        pieces.append(response.text)
        finish = response.finish_reason
    return "".join(pieces), finish


def generate_batch(model_and_tokenizer, prompt, rows: list[list], temp, seed) -> list[tuple[list[int], str]]:
    """(generated ids without the final EOS, finish reason) per row, all rows decoding together."""
    model, tokenizer = model_and_tokenizer
    eos = tokenizer.eos_token_ids
    mx.random.seed(seed)
    gen = BatchGenerator(model, max_tokens=MAX_TOKENS, stop_tokens=[[e] for e in eos], sampler=make_sampler(temp))
    uids = gen.insert([prompt] * len(rows), logits_processors=rows)
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    finish: dict[int, str] = {}
    while len(finish) < len(uids):
        for response in gen.next_generated():
            if not (response.finish_reason == "stop" and response.token in eos):
                tokens[response.uid].append(response.token)
            if response.finish_reason:
                finish[response.uid] = response.finish_reason
    gen.close()
    return [(tokens[uid], finish[uid]) for uid in uids]


def assert_tool_call(text: str) -> None:
    assert text.startswith("<tool_call>" + CALL_HEAD) and text.endswith(CALL_TAIL + "</tool_call>"), text
    call = json.loads(text[len("<tool_call>") : -len("</tool_call>")])
    assert call["name"] == "get_weather"
    jsonschema.validate(call["arguments"], WEATHER_ARGS)


@pytest.mark.parametrize(("temp", "seed"), SAMPLING)
@pytest.mark.parametrize("schema", [PERSON, SHAPES, STEPS], ids=["person", "shapes", "steps"])
def test_stream_generate_output_matches_schema(model_and_tokenizer, compiler, prompt, schema, temp, seed):
    processor = compiler.processor(response_format_grammar(schema_format(schema)))
    text, finish = generate_solo(model_and_tokenizer, prompt, [processor], temp, seed)
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), schema)
    assert processor.is_accepting and processor.error is None


@pytest.mark.parametrize(("temp", "seed"), SAMPLING)
def test_json_object_is_an_object_even_against_a_hostile_bias(model_and_tokenizer, compiler, prompt, temp, seed):
    # the bias alone would open with '"' or '}'; the grammar must still give one well-formed object
    processors = [
        closing_bias(model_and_tokenizer[1]),
        compiler.processor(response_format_grammar({"type": "json_object"})),
    ]
    text, finish = generate_solo(model_and_tokenizer, prompt, processors, temp, seed)
    assert finish == "stop", text
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(("temp", "seed"), SAMPLING[:2])
def test_forced_tool_call_with_lark_grammar(model_and_tokenizer, compiler, prompt, temp, seed):
    text, finish = generate_solo(model_and_tokenizer, prompt, [compiler.processor(tool_call_grammar())], temp, seed)
    assert finish == "stop"
    assert_tool_call(text)


@pytest.mark.parametrize(("temp", "seed"), SAMPLING)
def test_batch_rows_each_follow_their_own_grammar(model_and_tokenizer, compiler, prompt, temp, seed):
    tokenizer = model_and_tokenizer[1]
    schemas = [PERSON, SHAPES, STEPS]
    rows: list[list] = [[compiler.processor(response_format_grammar(schema_format(s)))] for s in schemas]
    rows.append([compiler.processor(tool_call_grammar())])
    rows.append([])  # unconstrained
    results = generate_batch(model_and_tokenizer, prompt, rows, temp, seed)
    for schema, (ids, finish) in zip(schemas, results, strict=False):
        assert finish == "stop"
        jsonschema.validate(json.loads(tokenizer.decode(ids)), schema)
    assert results[3][1] == "stop"
    assert_tool_call(tokenizer.decode(results[3][0]))
    assert results[4][0], "the unconstrained row generated nothing"


def test_constraints_leave_an_unconstrained_row_alone(model_and_tokenizer, compiler, prompt):
    grammar = response_format_grammar(schema_format(PERSON))
    mixed = generate_batch(model_and_tokenizer, prompt, [[compiler.processor(grammar)], []], 0.0, 0)
    free = generate_batch(model_and_tokenizer, prompt, [[], []], 0.0, 0)
    # identical batch shapes until the constrained row ends, so greedy tokens must match up to there
    shared = len(mixed[0][0])
    assert shared > 5
    assert mixed[1][0][:shared] == free[1][0][:shared]
    assert mixed[0][0][:shared] != free[0][0][:shared]  # the constraint did change its own row


def allowed_ids(processor: GrammarProcessor, context: list[int], vocab: int, dtype: mx.Dtype = mx.float32) -> set[int]:
    logits = processor(mx.array(context), mx.zeros((1, vocab), dtype=dtype))
    return {int(i) for i in np.nonzero(np.isfinite(np.array(logits.astype(mx.float32))[0]))[0]}


def test_only_every_eos_is_allowed_once_the_grammar_is_complete(model_and_tokenizer, compiler, prompt):
    tokenizer = model_and_tokenizer[1]
    processor = compiler.processor(response_format_grammar(schema_format(STEPS)))
    vocab = len(tokenizer._tokenizer)
    context = list(prompt)
    allowed_ids(processor, context, vocab)
    for token in tokenizer.encode('{"steps": [], "done": true}', add_special_tokens=False):
        context.append(token)
        allowed = allowed_ids(processor, context, vocab)
    assert allowed == set(tokenizer.eos_token_ids) and len(allowed) == 2
    assert processor.is_stopped and processor.is_accepting
    # generators ask for one more mask after sampling EOS: that is not an error
    assert allowed_ids(processor, [*context, min(tokenizer.eos_token_ids)], vocab) == allowed
    assert processor.error is None


def test_logits_wider_than_the_tokenizer_are_masked_past_its_end(model_and_tokenizer, compiler, prompt):
    vocab = len(model_and_tokenizer[1]._tokenizer)
    processor = compiler.processor(response_format_grammar({"type": "json_object"}))
    allowed = allowed_ids(processor, prompt, vocab + 77)
    assert allowed and all(model_and_tokenizer[1].decode([i]).startswith("{") for i in allowed)
    processor = compiler.processor(grammar_from_lark("start: /[a-z]+/"))
    allowed = allowed_ids(processor, prompt, vocab + 77, dtype=mx.bfloat16)
    assert allowed and max(allowed) < vocab


def test_a_rejected_token_stops_the_output_with_an_error(model_and_tokenizer, compiler, prompt):
    tokenizer = model_and_tokenizer[1]
    vocab = len(tokenizer._tokenizer)
    processor = compiler.processor(response_format_grammar({"type": "json_object"}))
    allowed_ids(processor, prompt, vocab)
    bad = tokenizer.encode("hello", add_special_tokens=False)[0]
    assert allowed_ids(processor, [*prompt, bad], vocab) == set(tokenizer.eos_token_ids)
    assert processor.error and processor.is_stopped


def test_invalid_grammars_fail_at_compile_time(compiler):
    with pytest.raises(InvalidGrammarError, match="unknown special token"):
        compiler.processor(grammar_from_lark("start: <nope> /x/"))
    with pytest.raises(InvalidGrammarError):
        compiler.processor(grammar_from_lark("start: missing_rule"))
    assert isinstance(InvalidGrammarError("x"), ValueError)


def accepts(compiler: ConstraintCompiler, grammar: str, ids: list[int], vocab: int) -> bool:
    """Whether the grammar allows `ids` token by token and then allows EOS."""
    processor = compiler.processor(grammar)
    context = [0]
    for token in [*ids, compiler.eos_token_ids[0]]:
        if token not in allowed_ids(processor, context, vocab):
            return False
        context.append(token)
    return True


def test_reasoning_prefix_before_the_json(model_and_tokenizer, compiler):
    tokenizer = model_and_tokenizer[1]
    vocab = len(tokenizer._tokenizer)
    think = compiler.think_tags("<think>", "</think>")
    assert all(isinstance(tag, int) for tag in think)
    enc = lambda text: list(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    answer = enc('{"steps": [], "done": true}')
    thought = enc("Let me think: {not json} here.\n")
    fmt = schema_format(STEPS)

    optional = response_format_grammar(fmt, think=think)
    assert accepts(compiler, optional, [think[0], *thought, think[1], *enc("\n\n"), *answer], vocab)
    assert accepts(compiler, optional, [think[0], think[1], *answer], vocab)
    assert accepts(compiler, optional, answer, vocab)
    assert not accepts(compiler, optional, [*thought, think[1], *answer], vocab)
    assert not accepts(compiler, optional, [think[0], *thought, think[1], *enc('{"done": 1}')], vocab)

    opened = response_format_grammar(fmt, think=think, in_reasoning=True)
    assert accepts(compiler, opened, [*thought, think[1], *answer], vocab)
    assert not accepts(compiler, opened, answer, vocab)
    # the tag texts name the same special tokens
    assert response_format_grammar(fmt, think=("<think>", "</think>"), in_reasoning=True) != opened
    assert accepts(
        compiler,
        response_format_grammar(fmt, think=("<think>", "</think>"), in_reasoning=True),
        [*thought, think[1], *answer],
        vocab,
    )


def test_reasoning_prefix_with_plain_text_tags(model_and_tokenizer, compiler):
    tokenizer = model_and_tokenizer[1]
    vocab = len(tokenizer._tokenizer)
    think = compiler.think_tags("[REASON]", "[/REASON]")
    assert think == ("[REASON]", "[/REASON]")  # not tokens of this vocabulary
    enc = lambda text: list(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    grammar = response_format_grammar({"type": "json_object"}, think=think, tags_are_tokens=False)
    assert accepts(compiler, grammar, enc('[REASON]a [/REAS b[/REASON]\n{"a": 1}'), vocab)
    assert not accepts(compiler, grammar, enc('[REASON]a[/REASON] x {"a": 1}'), vocab)
    opened = response_format_grammar({"type": "json_object"}, think=think, tags_are_tokens=False, in_reasoning=True)
    assert accepts(compiler, opened, enc('a[/REASON]{"a": 1}'), vocab)


def test_compiled_grammars_are_cached_and_processors_independent(compiler, prompt, model_and_tokenizer):
    vocab = len(model_and_tokenizer[1]._tokenizer)
    grammar = response_format_grammar({"type": "json_object"})
    first, second = compiler.processor(grammar), compiler.processor(grammar)
    brace = model_and_tokenizer[1].encode("{")[0]
    at_start = allowed_ids(first, prompt, vocab)
    assert brace in at_start and allowed_ids(first, [*prompt, brace], vocab) != at_start
    assert allowed_ids(second, prompt, vocab) == at_start  # second is still at the start
