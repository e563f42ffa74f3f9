"""The token floor is a true lower bound of what each kind of tokenizer the server loads makes of a text (every
test flavour's byte-level BPE, one with Qwen's NFC normalizer, a SentencePiece-style BPE with byte fallback),
close to the true count for prose, cheap for 10 MB, and absent where a tokenizer could swallow characters."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import PreTrainedTokenizerFast

from mlx_router.errors import InvalidRequestError
from mlx_router.serving.prompt_tokens import PromptEncoder
from mlx_router.serving.token_floor import TokenFloor
from tests.fixtures.models import cached_tokenizer
from tests.fixtures.tokenizers import FLAVOURS

PROSE = (Path(json.__file__).read_text(encoding="utf-8") + (Path(__file__).parents[2] / "README.md").read_text())[
    :200_000
]
# Texts that tokenize badly: the long tokens' characters mixed, runs, scripts, emoji, combining marks.
ADVERSARIAL = [
    "#" * 5000,
    "#=" * 3000,
    "# # # " * 1000,
    " " * 5000,
    "\n" * 5000,
    " \n\t" * 1000,
    "ab" * 4000,
    "数据" * 2000,
    "😀" * 2000,
    "e\u0301" * 2000,
    "\u1100\u1161\u11a8" * 1000,  # Hangul jamo: NFC makes one syllable of three
    "ﬁ" * 1000,  # NFKC makes two letters of one
    "▁" * 3000,
    "▁a▁" * 1000,
    "<0x0A>" * 500,
    "<|im_start|>user\n" * 300,
    "x",
    "",
]


def _flavour_tokenizer(flavour: str) -> Tokenizer:
    return Tokenizer.from_file(str(cached_tokenizer(flavour) / "tokenizer.json"))


def _with_normalizer(tok: Tokenizer, normalizer: Any) -> Tokenizer:
    tok = Tokenizer.from_str(tok.to_str())
    tok.normalizer = normalizer
    return tok


def _sentencepiece_style() -> Tokenizer:
    """A Llama-2-style BPE: spaces spelled "▁" by the normalizer, bytes it cannot spell as "<0xNN>" tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    special = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=special, show_progress=False)
    tok.train_from_iterator([PROSE[i : i + 2000] for i in range(0, len(PROSE), 2000)], trainer)
    return tok


@pytest.fixture(scope="module")
def tokenizers_under_test() -> dict[str, Tokenizer]:
    toks = {name: _flavour_tokenizer(name) for name in FLAVOURS}
    toks["qwen+NFC"] = _with_normalizer(toks["qwen"], normalizers.NFC())
    toks["qwen+NFKC"] = _with_normalizer(toks["qwen"], normalizers.NFKC())
    toks["sentencepiece"] = _sentencepiece_style()
    return toks


@pytest.fixture(scope="module")
def floors(tokenizers_under_test: dict[str, Tokenizer]) -> dict[str, TokenFloor]:
    measured = {name: TokenFloor.measure(tok) for name, tok in tokenizers_under_test.items()}
    assert all(measured.values()), measured
    return measured  # type: ignore[return-value]


def _check(tok: Tokenizer, floor: TokenFloor, text: str) -> tuple[int, int]:
    actual = len(tok.encode(text, add_special_tokens=False).ids)
    bound = floor.tokens_at_least(text)
    assert bound <= actual, f"floor {bound} > {actual} tokens for {text[:40]!r}..."
    return bound, actual


def test_the_floor_never_passes_the_true_count(tokenizers_under_test: dict[str, Tokenizer]) -> None:
    for name, tok in tokenizers_under_test.items():
        floor = TokenFloor.measure(tok)
        assert floor is not None, name
        for text in ADVERSARIAL + [PROSE[:20_000]]:
            _check(tok, floor, text)


@settings(
    max_examples=int(os.environ.get("MLX_ROUTER_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from([*FLAVOURS, "qwen+NFC", "qwen+NFKC", "sentencepiece"]),
    text=st.lists(
        st.sampled_from(["a", "b", " ", "  ", "\n", "#", "=", "é", "e\u0301", "数", "😀", "▁", "<0x41>", "ﬁ", "1"])
        | st.text(max_size=3),
        max_size=60,
    ).map("".join),
)
def test_the_floor_holds_for_any_text(
    tokenizers_under_test: dict[str, Tokenizer], floors: dict[str, TokenFloor], name: str, text: str
) -> None:
    _check(tokenizers_under_test[name], floors[name], text)


def test_the_floor_is_close_for_prose_and_cheap_for_ten_megabytes(
    tokenizers_under_test: dict[str, Tokenizer], floors: dict[str, TokenFloor]
) -> None:
    for name in ("qwen", "llama3", "sentencepiece"):
        bound, actual = _check(tokenizers_under_test[name], floors[name], PROSE)
        assert actual <= 3 * bound, (name, bound, actual)  # measured: 1.4 byte-level, 2.1 SentencePiece
    big = PROSE * (10_000_000 // len(PROSE))
    t0 = time.perf_counter()
    assert floors["qwen"].tokens_at_least(big) > 1_000_000
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s here; tokenizing it takes ~5 s and ~1.2 GB


@pytest.mark.parametrize(
    "change",
    [
        {"normalizer": {"type": "Lowercase"}},
        {"normalizer": {"type": "Strip", "strip_left": True, "strip_right": True}},
        {"pre_tokenizer": {"type": "Whitespace"}},
        {"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False}},
    ],
)
def test_no_floor_where_characters_may_vanish(change: dict[str, Any]) -> None:
    spec = json.loads(_flavour_tokenizer("qwen").to_str())
    spec.update(change)
    assert TokenFloor.from_spec(spec) is None


def test_no_floor_for_a_model_with_an_unknown_token_that_swallows_characters() -> None:
    spec = json.loads(_sentencepiece_style().to_str())
    spec["model"]["byte_fallback"] = False
    assert TokenFloor.from_spec(spec) is None
    spec["model"] = {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"}
    assert TokenFloor.from_spec(spec) is None


def test_refuse_oversized_names_the_bound() -> None:
    encoder = PromptEncoder(PreTrainedTokenizerFast(tokenizer_object=_flavour_tokenizer("qwen")))
    encoder.refuse_oversized(PROSE[:1000], 4096, "messages")  # fits: nothing happens
    encoder.refuse_oversized(PROSE, None, "messages")  # no known context: nothing to check
    with pytest.raises(InvalidRequestError) as caught:
        encoder.refuse_oversized(PROSE, 4096, "messages")
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert "at least" in caught.value.message
