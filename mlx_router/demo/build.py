"""Build the demo model from nothing, offline: a BPE tokenizer learnt from Python's standard library, a tiny
random llama, trained until it answers the README's chats (``chats.py``) word for word.

The model must answer as shown under the server's default sampling (temperature 1), not only greedily.
Training stops once every answer token is the argmax by a small margin; then the output head is sharpened:
the final norm's weight, which scales every logit (the head is tied to the embedding, with no bias), is
multiplied until the smallest margin is ``sharp_margin`` logits. The argmax anywhere stays the same, and
each answer token becomes all but certain (probability > 1 - vocab * e^-sharp_margin).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_router.demo.chats import DEMO_CONFIG_COMMENT, DemoChat, demo_chats
from mlx_router.demo.store import DemoRecipe
from mlx_router.demo.tokenizer import QWEN, token_ids, train_base_bpe, vocab_size, write_tokenizer
from mlx_router.demo.training import (
    Encoded,
    encode_chats,
    load_model,
    measure_fit,
    train_until_exact,
    verify_chats,
)

logger = logging.getLogger(__name__)

# A seed converges in 5 to 15 s; one that gets stuck (never seen) gives way to the next.
SECONDS_PER_ATTEMPT = 60.0
ATTEMPTS = 3


def _corpus_extras(chats: list[DemoChat]) -> Iterator[str]:
    """Texts that should cost few tokens: the template's fixed phrases and the chats themselves (BPE keeps
    pairs seen at least twice, so each chat goes in twice)."""
    yield QWEN.template_path.read_text(encoding="utf-8")
    for _ in range(2):
        for chat in chats:
            yield chat.completion
            yield json.dumps(chat.tools or [])
            yield from (str(m.get("content") or "") for m in chat.messages)


def model_config(tok_dir: Path, recipe: DemoRecipe) -> dict[str, Any]:
    """The mlx_lm config.json of the demo model (a llama over the tokenizer at ``tok_dir``)."""
    eos = token_ids(tok_dir, QWEN.eos)
    shape = {
        "hidden_size": recipe.hidden,
        "intermediate_size": 2 * recipe.hidden,
        "num_hidden_layers": recipe.layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    return {
        "_comment": DEMO_CONFIG_COMMENT,
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        **shape,
        "vocab_size": vocab_size(tok_dir),
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": recipe.context,
        "rope_theta": 10000.0,
        "bos_token_id": None,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }


def _new_model(config: dict[str, Any], seed: int) -> nn.Module:
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    return model


def _save(model: nn.Module, config: dict[str, Any], out_dir: Path) -> None:
    from mlx_lm.utils import save_config, save_model

    save_model(out_dir, model)
    save_config(dict(config), out_dir / "config.json")
    ends = {"bos_token_id": None, "eos_token_id": config["eos_token_id"]}
    (out_dir / "generation_config.json").write_text(json.dumps(ends, indent=2))


def _train(config: dict[str, Any], data: list[Encoded], recipe: DemoRecipe) -> nn.Module:
    """A model that knows ``data``, its output sharpened; another seed is tried if one gets stuck."""
    result = None
    for attempt in range(ATTEMPTS):
        model = _new_model(config, recipe.seed + attempt)
        result = train_until_exact(
            model,
            data,
            lr=recipe.lr,
            min_margin=recipe.min_margin,
            max_seconds=SECONDS_PER_ATTEMPT,
            log=_progress_logger(),
        )
        if result.converged:
            _sharpen(model, recipe.sharp_margin / result.margin)
            return model
        logger.warning("demo model: seed %d did not converge (%s); trying another", recipe.seed + attempt, result)
    raise RuntimeError(f"the demo model did not learn its chats: {result}")


def _sharpen(model: nn.Module, factor: float) -> None:
    """Scale every output logit by ``factor`` (argmaxes stay; margins grow): the final norm's weight is the
    last thing before the tied, bias-free output head."""
    model.model.norm.weight = model.model.norm.weight * factor


def build_demo_model(out_dir: Path, recipe: DemoRecipe | None = None) -> dict[str, Any]:
    """Write the demo model into ``out_dir`` (created if needed) and check it with mlx_lm; returns facts
    about the build. Raises RuntimeError if the model does not learn every chat."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    recipe = recipe or DemoRecipe()
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    chats = demo_chats()
    # the base merges are written where the final tokenizer goes, which then reads and replaces them
    base = train_base_bpe(out_dir, recipe.vocab, _corpus_extras(chats))
    write_tokenizer(out_dir, base, QWEN)
    logger.info("demo model: tokenizer learnt in %.1f s; training...", time.perf_counter() - start)
    config = model_config(out_dir, recipe)
    data = encode_chats(load_tokenizer(out_dir), chats, QWEN.eos[0])
    trained = time.perf_counter()
    model = _train(config, data, recipe)
    trained = time.perf_counter() - trained
    fit = measure_fit(model, data)
    _save(model, config, out_dir)
    problems = verify_chats(*load_model(out_dir), chats, QWEN.eos[0])
    if problems:
        raise RuntimeError("the demo model misses chats after saving:\n" + "\n".join(problems))
    return {
        "train_seconds": round(trained, 2),
        "margin": round(fit.margin, 2),
        "confidence": fit.confidence,
        "chats": [c.name for c in chats],
        "build_seconds": round(time.perf_counter() - start, 2),
    }


def _progress_logger(every_s: float = 5.0) -> Callable[[str], None]:
    """A training log callback that lets one line through every ``every_s`` seconds."""
    last = [time.perf_counter()]

    def log(line: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            last[0] = now
            logger.info("demo model: training, %s", line)

    return log
