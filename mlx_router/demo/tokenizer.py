"""Tiny byte-level BPE tokenizers, learnt offline, that speak a real model family's chat format.

The merges are learnt from Python's own standard library sources (present on every install, so nothing is
downloaded), plus any texts the caller wants to cost few tokens. A *flavour* then adds its control tokens
on top (each one a single id) and a Hugging Face chat template, so ``transformers`` and ``mlx_lm`` read the
result like any model's tokenizer. The demo model uses ``QWEN`` (ChatML, ``<tool_call>`` JSON, ``<think>``);
the test fixtures add more flavours with their own templates.
"""

from __future__ import annotations

import glob
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PACKAGE_DIR = Path(__file__).resolve().parent

# Qwen2's pre-tokenizer split (GPT-4 style): words, numbers one digit at a time, punctuation runs, whitespace.
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Flavour:
    """What makes a tokenizer speak one model family's chat format.

    ``special`` tokens are control tokens (dropped by ``decode(skip_special_tokens=True)``); ``added``
    tokens are single tokens too but stay visible in decoded text (as ``<think>`` does in Qwen3). ``eos``
    lists every token that ends a turn; ``eos[0]`` is the tokenizer's ``eos_token``. The chat template is
    ``<templates_dir>/<name>.jinja``.
    """

    name: str
    special: tuple[str, ...]
    added: tuple[str, ...]
    eos: tuple[str, ...]
    bos: str | None = None
    pad: str | None = None
    templates_dir: Path = PACKAGE_DIR

    @property
    def template_path(self) -> Path:
        """The Jinja chat template file of this flavour."""
        return self.templates_dir / f"{self.name}.jinja"

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token the flavour adds to the base vocabulary (special first)."""
        return self.special + self.added


CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_ADDED_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
QWEN = Flavour(
    "qwen",
    special=CHATML_TOKENS + ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
    added=QWEN_ADDED_TOKENS,
    eos=("<|im_end|>", "<|endoftext|>"),
    pad="<|endoftext|>",
)


def stdlib_sources() -> Iterator[str]:
    """The text of every top-level module of Python's standard library (the offline BPE corpus)."""
    for source in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(source, encoding="utf-8", errors="ignore") as fh:
            yield fh.read()


def train_base_bpe(out_dir: Path, vocab_size: int = 4000, extra_texts: Iterable[str] = ()) -> Path:
    """Learn byte-level BPE merges offline and save them as ``out_dir/tokenizer.json`` (no added tokens).

    ``extra_texts`` join the standard library in the corpus: phrases found there (a chat template's fixed
    text, say) become few tokens, which keeps prompts short and training fast.
    """
    tok = Tokenizer(models.BPE())  # no unk token: byte-level covers every input
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()  # makes mlx_lm pick its fast BPEStreamingDetokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )

    def corpus() -> Iterator[str]:
        yield from stdlib_sources()
        yield from extra_texts

    tok.train_from_iterator(corpus(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    return out_dir / "tokenizer.json"


def write_tokenizer(out_dir: Path, base_tokenizer_json: Path, flavour: Flavour) -> Path:
    """Write an HF tokenizer dir (tokenizer.json, tokenizer_config.json with the chat template,
    special_tokens_map.json) for ``flavour`` on top of the base BPE."""
    tok = Tokenizer.from_file(str(base_tokenizer_json))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in flavour.special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in flavour.added])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    decoder = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in flavour.special,
        }
        for t in flavour.tokens
    }
    named = {
        "bos_token": flavour.bos,
        "eos_token": flavour.eos[0],
        "pad_token": flavour.pad,
        "unk_token": None,
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        **named,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": flavour.template_path.read_text(encoding="utf-8"),
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    special_map = {k: v for k, v in named.items() if v is not None}
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return out_dir


def token_ids(tokenizer_dir: Path, tokens: tuple[str, ...]) -> list[int]:
    """Ids of ``tokens`` in the tokenizer at ``tokenizer_dir`` (KeyError if one is missing)."""
    vocab = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")).get_vocab(with_added_tokens=True)
    return [vocab[t] for t in tokens]


def vocab_size(tokenizer_dir: Path) -> int:
    """Number of ids the model's embedding must cover (base merges + added tokens)."""
    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    return tok.get_vocab_size(with_added_tokens=True)
