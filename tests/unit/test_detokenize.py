"""The HTTP side's incremental detokenizer gives, token by token, what decoding the whole output at once gives,
and what mlx-lm's streaming detokenizers (which the server used before it stopped importing MLX) gave."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mlx_lm.tokenizer_utils import load as mlx_lm_load_tokenizer
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mlx_router.serving.detokenize import IncrementalDetokenizer
from tests.fixtures.models import cached_tokenizer
from tests.fixtures.tokenizers import FLAVOURS

TEXTS = [
    "Hello world",
    " leading space",
    "naïve café ünïcode",
    "数字和中文",
    "emoji 🎉🚀 ok",
    "  spaced  \n\n tabs\t",
    "<tag> x",
]


def _stream(detok: object, ids: list[int]) -> list[str]:
    pieces = []
    for t in ids:
        detok.add_token(t)  # type: ignore[attr-defined]
        pieces.append(detok.last_segment)  # type: ignore[attr-defined]
    detok.finalize()  # type: ignore[attr-defined]
    pieces.append(detok.last_segment)  # type: ignore[attr-defined]
    return pieces


def _sequences(tok: object, seed: str) -> list[list[int]]:
    rng = random.Random(seed)
    special = sorted(tok.get_added_vocab().values())  # type: ignore[attr-defined]
    out = []
    for _ in range(6):
        ids: list[int] = []
        for _ in range(8):
            ids += tok.encode(rng.choice(TEXTS), add_special_tokens=False)  # type: ignore[attr-defined]
            if special and rng.random() < 0.3:
                ids.append(rng.choice(special))
        out.append(ids)
    return out


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_streamed_text_is_the_whole_decode_and_what_mlx_lm_streamed(flavour: str, model_cache_root: Path) -> None:
    path = cached_tokenizer(flavour, model_cache_root)
    tok = AutoTokenizer.from_pretrained(str(path))
    reference = mlx_lm_load_tokenizer(path)
    for ids in _sequences(tok, flavour):
        ours = _stream(IncrementalDetokenizer(tok), ids)
        theirs = _stream(reference.detokenizer, ids)
        whole = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert "".join(ours) == whole.removeprefix(" ")
        assert "".join(ours) == "".join(theirs)
        assert not any("\ufffd" in piece for piece in ours)  # a character split over tokens waits for its end


def test_sentencepiece_style_leading_space(tmp_path: Path) -> None:
    """A Metaspace tokenizer (Llama 2, Mistral): the first word's marker is no space, the others' are."""
    vocab = {"<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3, "▁": 4, "H": 5, "e": 6, "l": 7, "o": 8}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    ids = [1, 2, 3, 2]
    pieces = _stream(IncrementalDetokenizer(tok), ids)
    assert pieces[:4] == ["Hello", " world", "!", " world"]
    assert "".join(pieces) == tok.decode(ids)


def test_incomplete_character_is_flushed_at_the_end(model_cache_root: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(cached_tokenizer("qwen", model_cache_root)))
    ids = tok.encode("🎉", add_special_tokens=False)
    assert len(ids) > 1  # byte-level: the emoji spans several tokens
    pieces = _stream(IncrementalDetokenizer(tok), ids[:-1])
    assert "".join(pieces) == tok.decode(ids[:-1])  # the cut character comes out at finalize, as decode gives it
