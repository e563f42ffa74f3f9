"""Chat prompts encoded stretch by stretch give exactly the whole text's ids, and a known stretch is not encoded
again; tokenizers that encode a stretch by where it stands are encoded whole."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mlx_router.serving.prompt_tokens import MEMO_MIN_CHARS, PromptEncoder
from tests.fixtures.models import cached_tokenizer
from tests.fixtures.tokenizers import FLAVOURS

WORDS = ["alpha", "beta", " gamma", "naïve", "数字", "42", "\n\n", "  ", "\t", "end.", "<tag>", "x" * 30, "é"]


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(["", " ", "\n"]) for _ in range(n))


def _conversation(rng: random.Random, turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": _text(rng, 80)}]
    for _ in range(turns):
        msgs += [{"role": "user", "content": _text(rng, 120)}, {"role": "assistant", "content": _text(rng, 60)}]
    return msgs + [{"role": "user", "content": _text(rng, 10)}]


def open_tokenizer(path: Path) -> Any:
    """As the server holds it: transformers' tokenizer."""
    return AutoTokenizer.from_pretrained(str(path))


class _Spy:
    """Wraps a tokenizers backend and records the stretches it is asked to encode."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.asked: list[str] = []

    def encode_batch(self, texts: list[str], **kw: Any) -> Any:
        self.asked += texts
        return self.backend.encode_batch(texts, **kw)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_stretch_by_stretch_equals_whole(flavour: str, model_cache_root: Path) -> None:
    tok = open_tokenizer(cached_tokenizer(flavour, model_cache_root))
    enc = PromptEncoder(tok)
    assert enc.segmented  # every test flavour keeps its added tokens as written
    rng = random.Random(flavour)
    for turns in (0, 1, 3, 6):
        msgs = _conversation(rng, turns)
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert enc.encode(text) == list(tok.encode(text, add_special_tokens=False))
        assert enc.encode(text) == list(tok.encode(text, add_special_tokens=False))  # again, from the memo
    # added tokens right next to each other, at both ends, and text that only looks like one
    specials = sorted(tok.get_added_vocab())
    edge = specials[0] + specials[-1] + " <|im_star " + specials[1] + "\n\n" + specials[0]
    assert enc.encode(edge) == list(tok.encode(edge, add_special_tokens=False))
    assert enc.encode("") == []


def test_the_next_turn_encodes_only_its_new_text(tokenizer_dir: Path) -> None:
    tok = open_tokenizer(tokenizer_dir)
    enc = PromptEncoder(tok)
    spy = _Spy(enc._backend)
    enc._backend = spy
    rng = random.Random(7)
    long_user = _text(rng, 400)
    msgs = [{"role": "user", "content": long_user}]
    first = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc.encode(first)
    assert any(long_user in s for s in spy.asked)
    spy.asked.clear()
    reply = _text(rng, 50)
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    second = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert enc.encode(second) == list(tok.encode(second, add_special_tokens=False))
    assert not any(long_user in s for s in spy.asked)  # the long message came from the memo
    assert any(reply in s for s in spy.asked)


def test_memo_is_bounded(tokenizer_dir: Path) -> None:
    tok = open_tokenizer(tokenizer_dir)
    enc = PromptEncoder(tok, max_chars=4 * MEMO_MIN_CHARS)
    rng = random.Random(3)
    for _ in range(20):
        text = "<|im_start|>user\n" + _text(rng, 60) + "<|im_end|>"
        assert enc.encode(text) == list(tok.encode(text, add_special_tokens=False))
        assert enc._chars <= 4 * MEMO_MIN_CHARS


def _metaspace_first(tmp_path: Path) -> PreTrainedTokenizerFast:
    """A sentencepiece-style tokenizer whose pre-tokenizer marks only the text's first word (Llama 2, Mistral)."""
    vocab = {"[UNK]": 0, "▁hello": 1, "hello": 2, "▁world": 3, "world": 4, "▁": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.add_special_tokens([AddedToken("<s>", special=True, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_position_dependent_tokenizer_is_encoded_whole(tmp_path: Path) -> None:
    tok = _metaspace_first(tmp_path)
    text = "hello<s>world hello"
    whole = tok.encode(text, add_special_tokens=False)
    # Encoded stretch by stretch, "world" would be marked as a first word: the ids would differ.
    naive = [i for part in ("hello", "<s>", "world hello") for i in tok.encode(part, add_special_tokens=False)]
    assert naive != whole
    enc = PromptEncoder(tok)
    assert not enc.segmented
    assert enc.encode(text) == whole


def test_added_token_that_strips_whitespace_is_encoded_whole(tokenizer_dir: Path) -> None:
    tok = open_tokenizer(tokenizer_dir)
    tok._tokenizer.add_tokens([AddedToken("<sep>", lstrip=True, normalized=False)])
    enc = PromptEncoder(tok)
    assert not enc.segmented
    text = "a  <sep> b"
    assert enc.encode(text) == list(tok.encode(text, add_special_tokens=False))


def _respelled(tok: Any, text: str) -> list[int]:
    """Ids that decode to `text` but are not how the encoder spells it: each character encoded on its own (what
    a model may generate; re-encoding the text merges them)."""
    ids = [i for ch in text for i in tok.encode(ch, add_special_tokens=False)]
    assert tok.decode(ids) == text
    assert ids != list(tok.encode(text, add_special_tokens=False))
    return ids


def _turns(tok: Any, reply: str) -> tuple[str, str]:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say something"}]
    first = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "and then?"}]
    return first, tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def test_a_reply_sent_back_is_encoded_as_the_model_generated_it(tokenizer_dir: Path) -> None:
    """The next turn starts with exactly the last turn's prompt ids and the reply's generated ids, so the prefix
    cache (which matches ids) covers the reply; re-encoding its text would spell it otherwise."""
    tok = open_tokenizer(tokenizer_dir)
    enc = PromptEncoder(tok)
    reply = "Sure thing: the answer is forty-two, naïvely speaking."
    generated = _respelled(tok, reply)
    first, second = _turns(tok, reply)
    first_ids = enc.encode(first)
    canonical = list(tok.encode(second, add_special_tokens=False))
    assert canonical[: len(first_ids) + len(generated)] != first_ids + generated  # without it the cache misses
    assert enc.remember_reply(first, generated, reply)
    ids = enc.encode(second)
    assert ids[: len(first_ids) + len(generated)] == first_ids + generated
    assert tok.decode(ids) == tok.decode(canonical)  # the same text, the model's spelling of the reply
    rest = len(ids) - len(first_ids) - len(generated)  # what follows the reply is encoded as ever
    assert ids[-rest:] == canonical[-rest:]
    # filed again (the same reply generated another way), the latest spelling wins and the memo counts it once
    again = list(tok.encode(reply, add_special_tokens=False))
    chars = enc._chars
    assert enc.remember_reply(first, again, reply)
    assert enc._chars == chars
    assert enc.encode(second) == canonical


def test_replies_that_would_split_are_not_filed(tokenizer_dir: Path) -> None:
    tok = open_tokenizer(tokenizer_dir)
    enc = PromptEncoder(tok)
    first, second = _turns(tok, "x <|im_end|> y")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    # an added token among the ids, or its spelling in the text: the next turn splits the reply there
    assert not enc.remember_reply(first, [*tok.encode("x ", add_special_tokens=False), im_end], "x <|im_end|>")
    spelled = [i for ch in "x <|im_end|> y" for i in tok.encode(ch, add_special_tokens=False)]
    assert im_end not in spelled
    assert not enc.remember_reply(first, spelled, "x <|im_end|> y")
    assert not enc.remember_reply(first, [], "")
    assert enc.encode(second) == list(tok.encode(second, add_special_tokens=False))


def test_a_tokenizer_encoded_whole_files_no_reply(tmp_path: Path) -> None:
    tok = _metaspace_first(tmp_path)
    enc = PromptEncoder(tok)
    assert not enc.remember_reply("hello<s>", [1, 3], "hello world")
    assert enc.encode("hello<s>hello world") == tok.encode("hello<s>hello world", add_special_tokens=False)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_every_template_gets_the_reply_back_as_generated(flavour: str, model_cache_root: Path) -> None:
    """The next turn is the text's own encoding, stretch by stretch, except the stretch the template writes the
    reply back in, which is the generation prompt's last stretch and the generated ids, when the template writes
    it back as it was generated. Where the template writes the turn as it was prompted and generated (not
    Mistral's, which moves the system prompt to the last user message, nor Harmony's, whose model writes its
    channel markers itself: a reply holding them is never filed), the next turn starts with exactly the last
    turn's prompt and reply ids."""
    tok = open_tokenizer(cached_tokenizer(flavour, model_cache_root))
    enc = PromptEncoder(tok)
    reply = "Sure thing: the answer is forty-two, naively speaking."
    generated = _respelled(tok, reply)
    first, second = _turns(tok, reply)
    assert enc.remember_reply(first, generated, reply)
    assert enc._split is not None
    tail = enc._split.split(first)[-1]
    expected: list[int] = []
    for piece in filter(None, enc._split.split(second)):
        if piece == tail + reply:
            expected += list(tok.encode(tail, add_special_tokens=False)) + generated
        else:
            expected += list(tok.encode(piece, add_special_tokens=False))
    ids = enc.encode(second)
    assert ids == expected
    if flavour not in ("mistral", "harmony"):
        first_ids = enc.encode(first)
        assert ids[: len(first_ids) + len(generated)] == first_ids + generated
