"""Teach a tiny random model to reproduce a few chats exactly under greedy decoding.

The recipe: every chat is one sequence (prompt rendered by the tokenizer's chat template + completion + end
token); full-batch Adam on the completion tokens only; stop once every completion token is the argmax under
teacher forcing *with a margin* over the runner-up logit, so greedy decoding stays exact after saving,
reloading and incremental (KV-cache) decoding. ``verify_chats`` then checks that with mlx_lm itself.

Speed matters (the demo model is trained on a user's first start, the test models on a first test run), and
mlx's CPU matmuls are slow, so: the output head runs only where a token is supervised; chats are batched by
length; and chats that share a long prompt prefix (the tools block) compute it once per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

Encoded = tuple[list[int], list[int]]  # (prompt ids, completion ids incl. the end token)


class ChatExample(Protocol):
    """A chat to learn: OpenAI-style messages (+ tools, template kwargs) -> the exact completion text."""

    @property
    def name(self) -> str: ...
    @property
    def messages(self) -> list[dict[str, Any]]: ...
    @property
    def tools(self) -> list[dict[str, Any]] | None: ...
    @property
    def completion(self) -> str: ...
    @property
    def eos(self) -> str | None: ...  # the end token after the completion; None: the default one
    @property
    def kwargs(self) -> dict[str, Any]: ...  # extra chat-template variables


Chat = TypeVar("Chat", bound=ChatExample)


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended."""

    converged: bool
    steps: int
    seconds: float
    loss: float
    margin: float  # smallest (target logit - best other logit) over all completion tokens


def render_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **kwargs: Any
) -> list[int]:
    """Prompt ids of a chat through the tokenizer's own template, with the generation prompt."""
    return list(
        tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs
        )
    )


def chat_prompt(tokenizer: Any, chat: ChatExample) -> list[int]:
    """Prompt ids of ``chat``, its messages rendered as they are."""
    return render_prompt(tokenizer, chat.messages, chat.tools, **chat.kwargs)


def encode_chats(
    tokenizer: Any,
    chats: Sequence[Chat],
    default_eos: str,
    render: Callable[[Any, Chat], list[int]] = chat_prompt,
) -> list[Encoded]:
    """Token ids of each chat: the rendered prompt, and the completion followed by its end token."""
    data = []
    for chat in chats:
        eos_id = tokenizer.convert_tokens_to_ids(chat.eos or default_eos)
        completion = tokenizer.encode(chat.completion, add_special_tokens=False) + [eos_id]
        data.append((render(tokenizer, chat), completion))
    return data


@dataclass(frozen=True)
class _Batch:
    """Right-padded token rows and which of their positions predict which completion token."""

    rows: mx.array  # (B, N) ids
    positions: mx.array  # flat indices into (B * N)
    targets: mx.array  # the token each of those positions must predict


@dataclass(frozen=True)
class _Group:
    """Chats whose prompts start with the same tokens (the tools block): the prefix is computed once per step,
    the rest in batches of similar length so little is spent on padding."""

    prefix: mx.array | None  # (1, P) ids, or None
    batches: list[_Batch]


class PrefixCache:
    """Stands in for an mlx_lm KV cache while training: the first call through a layer stores the prefix's
    keys/values, later calls see them (broadcast to their batch) in front of their own. Gradients flow."""

    def __init__(self) -> None:
        self.offset = 0
        self._kv: tuple[mx.array, mx.array] | None = None

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> Any:
        return "causal"  # MLX aligns a causal mask bottom-right when there are more keys than queries

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self._kv is None:
            self._kv, self.offset = (keys, values), keys.shape[2]
            return keys, values
        batch = keys.shape[0]
        pk, pv = (mx.broadcast_to(a, (batch, *a.shape[1:])) for a in self._kv)
        return mx.concatenate([pk, keys], axis=2), mx.concatenate([pv, values], axis=2)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _cluster(data: list[Encoded], min_shared: int, keep: float = 0.8) -> list[tuple[int, list[Encoded]]]:
    """(shared prefix length, members) clusters; chats sharing little with others go together (prefix 0)."""
    clusters: list[tuple[int, list[Encoded]]] = []
    for item in data:
        for i, (shared, members) in enumerate(clusters):
            common = min(shared, _common_prefix(members[0][0], item[0]))
            # join only if most of the cluster's prefix stays shared (a system header alone is not worth it)
            if common >= max(min_shared, keep * shared):
                clusters[i] = (common, [*members, item])
                break
        else:
            clusters.append((len(item[0]), [item]))
    loners = [members[0] for _, members in clusters if len(members) == 1]
    together = [c for c in clusters if len(c[1]) > 1]
    return together + ([(0, loners)] if loners else [])


def _batches(members: list[Encoded], p: int, max_waste: float = 1.5) -> list[_Batch]:
    """The members' sequences after the first ``p`` tokens, in buckets padded less than ``max_waste``x."""
    inputs = sorted(
        (((prompt + completion)[:-1], prompt, completion) for prompt, completion in members),
        key=lambda item: (len(item[0]), item[0]),
    )
    buckets: list[list[tuple[list[int], list[int], list[int]]]] = []
    for item in inputs:
        if buckets and len(item[0]) - p <= max_waste * (len(buckets[-1][0][0]) - p):
            buckets[-1].append(item)
        else:
            buckets.append([item])
    out = []
    for bucket in buckets:
        width = max(len(seq) for seq, _, _ in bucket) - p
        rows, positions, targets = [], [], []
        for row, (seq, prompt, completion) in enumerate(bucket):
            rows.append(seq[p:] + [0] * (width - len(seq) + p))
            # the token at i predicts seq[i + 1]: the completion is predicted from the last prompt token on
            positions += [row * width + i - p for i in range(len(prompt) - 1, len(seq))]
            targets += completion
        out.append(_Batch(mx.array(rows), mx.array(positions), mx.array(targets)))
    return out


def _group(data: list[Encoded], min_shared: int = 32) -> list[_Group]:
    """Cluster chats by shared prompt prefix and build each cluster's tensors."""
    groups = []
    for shared, members in _cluster(data, min_shared):
        # the last prompt token predicts the first completion token: it stays out of the prefix
        p = min(shared, min(len(prompt) for prompt, _ in members) - 1)
        prefix = mx.array([members[0][0][:p]]) if p > 0 else None
        groups.append(_Group(prefix, _batches(members, max(p, 0))))
    return groups


def _hidden(model: nn.Module, group: _Group) -> list[mx.array]:
    """Final hidden states at the supervised positions of one group, batch by batch."""
    caches = [PrefixCache() for _ in model.layers]
    if group.prefix is not None:
        model.model(group.prefix, cache=caches)  # fills the caches; its own output is not needed
    out = []
    for batch in group.batches:
        hidden = model.model(batch.rows, cache=caches if group.prefix is not None else None)
        out.append(hidden.reshape(-1, hidden.shape[-1])[batch.positions])
    return out


def _loss(model: nn.Module, groups: list[_Group]) -> tuple[mx.array, mx.array, mx.array]:
    """Cross-entropy on completion tokens; the worst margin of a target over the other logits, and the worst
    target's negative log-probability (both without gradient)."""
    hidden = mx.concatenate([h for g in groups for h in _hidden(model, g)])
    targets = mx.concatenate([b.targets for g in groups for b in g.batches])
    # the lm head only where it is supervised: it dominates the cost otherwise
    logits = model.model.embed_tokens.as_linear(hidden) if model.args.tie_word_embeddings else model.lm_head(hidden)
    token_loss = nn.losses.cross_entropy(logits, targets)
    target_logit = mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    is_target = mx.arange(logits.shape[-1])[None, :] == targets[:, None]
    others = mx.where(is_target, mx.array(-mx.inf, logits.dtype), logits)
    margin = mx.min(target_logit - mx.max(others, axis=-1))
    return mx.mean(token_loss), mx.stop_gradient(margin), mx.stop_gradient(mx.max(token_loss))


def _scalar(x: mx.array) -> float:
    return cast(float, x.item())


def train_until_exact(
    model: nn.Module,
    data: list[Encoded],
    *,
    lr: float = 3e-3,
    max_steps: int = 1500,
    min_margin: float = 1.0,
    max_seconds: float = 300.0,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place until every completion token wins by ``min_margin`` logits (or give up)."""
    groups = _group(data)
    optimizer = optim.Adam(learning_rate=lr)
    loss_and_grad = nn.value_and_grad(model, _loss)
    start = time.perf_counter()
    loss_value, margin_value, n = float("inf"), float("-inf"), 0
    for n in range(1, max_steps + 1):
        (loss, margin, _), grads = loss_and_grad(model, groups)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss, margin)
        loss_value, margin_value = _scalar(loss), _scalar(margin)
        if margin_value >= min_margin:
            # that margin was measured before this step's update: confirm it on the weights we keep
            loss, margin, _ = _loss(model, groups)
            loss_value, margin_value = _scalar(loss), _scalar(margin)
        elapsed = time.perf_counter() - start
        if log:
            log(f"step {n} loss {loss_value:.4f} margin {margin_value:.2f} t={elapsed:.1f}s")
        if margin_value >= min_margin:
            return TrainResult(True, n, elapsed, loss_value, margin_value)
        if elapsed > max_seconds:
            break
    return TrainResult(False, n, time.perf_counter() - start, loss_value, margin_value)


@dataclass(frozen=True)
class Fit:
    """How well a model knows its chats under teacher forcing."""

    loss: float  # mean cross-entropy of the completion tokens
    margin: float  # smallest (target logit - best other logit)
    confidence: float  # smallest probability of a target token: what sampling at temperature 1 gets right


def measure_fit(model: nn.Module, data: list[Encoded]) -> Fit:
    """The fit of ``model`` to ``data`` (one forward pass, no update)."""
    loss, margin, worst_nll = (_scalar(x) for x in _loss(model, _group(data)))
    return Fit(loss, margin, math.exp(-worst_nll))


def greedy_completion(model: nn.Module, tokenizer: Any, prompt: list[int], max_tokens: int) -> tuple[str, int | None]:
    """Greedy completion of ``prompt`` with mlx_lm's ``stream_generate``: (text, end token id or None)."""
    from mlx_lm import stream_generate

    text, last = "", None
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        text += response.text
        last = response
    if last is None or last.finish_reason != "stop":
        return text, None
    return text, last.token


def load_model(model_dir: Path) -> tuple[nn.Module, Any]:
    """(model, tokenizer wrapper) of a model dir, read by ``mlx_lm.load`` as a server would."""
    from mlx_lm import load

    loaded = load(str(model_dir))
    return loaded[0], loaded[1]


def verify_chats(
    model: nn.Module,
    tokenizer: Any,
    chats: Sequence[Chat],
    default_eos: str,
    render: Callable[[Any, Chat], list[int]] = chat_prompt,
    label: str = "",
) -> list[str]:
    """Greedy-decode every chat; one message per chat whose text or end token differs."""
    problems = []
    for chat in chats:
        budget = len(tokenizer.encode(chat.completion, add_special_tokens=False)) + 3
        text, end = greedy_completion(model, tokenizer, render(tokenizer, chat), budget)
        want_end = tokenizer.convert_tokens_to_ids(chat.eos or default_eos)
        if text != chat.completion or end != want_end:
            problems.append(f"{label}{chat.name}: got {text!r} end={end}, want {chat.completion!r} end={want_end}")
    return problems
