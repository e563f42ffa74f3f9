"""The configuration file (`config.json`) as typed, validated pydantic models.

The file keeps the shape users of mlx-router know: `defaults`, `server`, `models`. A wrong type or value fails at
start-up with the key's dotted name; an unknown key is kept out and logged as a warning (a typo must not pass
silently, and must not stop a service either).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from mlx_router.config.embedding_spec import EmbeddingSpec, default_spec
from mlx_router.config.model_files import read_json
from mlx_router.vision.limits import MediaLimits

logger = logging.getLogger(__name__)

PressureLevel = Literal["normal", "moderate", "high", "critical"]


class _Section(BaseModel):
    """A config section: unknown keys are collected (and warned about) instead of rejected."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    def unknown_keys(self) -> list[str]:
        """Keys this section does not know; keys starting with '_' are comments and not reported."""
        return sorted(k for k in (self.model_extra or {}) if not k.startswith("_"))


class DefaultsConfig(_Section):
    """`defaults`: server-wide request defaults and resource limits."""

    max_tokens: int = Field(
        4096, gt=0, description="Tokens generated when a request sets no max_tokens/max_completion_tokens."
    )
    timeout: float = Field(
        300.0, gt=0, description="Seconds a whole request may take (queue, model load, generation); 504 beyond."
    )
    cache_size: int = Field(
        2, ge=1, description="Models kept loaded at once; the least recently used idle one is unloaded first."
    )
    memory_threshold_gb: float = Field(
        4.0,
        ge=0,
        description="Available memory (GB) under which memory pressure rises; also the headroom of the default "
        "memory budget (see MEMORY_PRESSURE.md).",
    )
    safety_margin: float = Field(
        1.2, gt=0, description="Factor on each model's memory estimate (its weights, or required_memory_gb)."
    )
    swap_high_percent: float = Field(
        75.0, ge=0, le=100, description="Swap use (percent) at which memory pressure counts as high."
    )
    swap_critical_percent: float = Field(
        90.0, ge=0, le=100, description="Swap use (percent) at which memory pressure is critical: new requests get 503."
    )
    stream: bool = Field(
        False,
        description="Stream when a request does not say and its Accept header names text/event-stream or "
        "application/x-ndjson; a request without stream that accepts JSON or anything (*/*) gets JSON, as from "
        "OpenAI (the official clients omit stream for non-streaming calls).",
    )
    stream_chunk_size: int = Field(
        1,
        ge=1,
        description="Tokens grouped into one streamed event (when the server falls behind, tokens waiting for a "
        "stream go out together).",
    )
    streaming_format: Literal["sse", "json_lines", "json_array"] = Field(
        "sse", description="sse (OpenAI's Server-Sent Events), json_lines or json_array."
    )
    warmup_tokens: int | None = Field(
        None,
        ge=0,
        description="Tokens each warm-up request generates when a model loads (a batch stage's requests go on "
        "until all its rows have decoded together); 0: no warm-up; null: 3 on CUDA (where kernels compile on first "
        "use), 0 elsewhere.",
    )
    warmup_batch_sizes: list[int] | None = Field(
        None,
        description="Batch sizes the warm-up runs, each with prompts of different lengths and newcomers joining a "
        "running batch, all its rows decoding together before it ends (null: 1, 2, 4, ... max_running_requests).",
    )
    enable_function_calling: bool = Field(True, description="Offer tools to models and parse their calls.")
    constrain_tool_calls: bool = Field(
        True,
        description="With tool_choice auto, hold a call the model starts to valid markup and the tool's JSON "
        "schema (costs a little speed).",
    )
    model: str | None = Field(None, description="Model to load at start-up (null: each loads on its first request).")
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Other names for local models in /v1/messages requests: name or glob pattern (* and ?) -> "
        'model id, e.g. {"claude-sonnet-*": "Qwen3-8B-4bit", "claude-haiku-*": "Qwen3-1.7B-4bit"} for Claude Code, '
        "which asks for Anthropic's names. An exact name wins, then the first pattern that matches.",
    )
    model_directory: str | None = Field(
        None, description="Folder of MLX models (MLX_MODEL_DIR and --model-dir override it)."
    )
    # keys new in 3.0
    scan_hf_cache: bool = Field(True, description="Also serve the models in the Hugging Face hub cache.")
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        description="Memory (GB) for all loaded models and their KV caches (null: total memory less "
        "memory_threshold_gb).",
    )
    max_running_requests: int = Field(32, ge=1, description="Requests decoded together per model (the batch size).")
    max_queued_requests: int = Field(256, ge=0, description="Requests waiting per model before 429.")
    prefill_step_size: int = Field(
        512, ge=16, description="Prompt tokens per prefill chunk, so long prompts do not stall running streams."
    )
    prefill_batch_tokens: int = Field(
        4096,
        ge=16,
        description="Prompt tokens prefilled together between two decode steps when several prompts wait (smaller "
        "groups made first tokens later under a burst: bench/HISTORY.md).",
    )
    prefill_gather_ms: float = Field(
        0.0,
        ge=0,
        description="While a model's batch decodes, newly arrived requests wait up to this long so that a burst "
        "is prefilled in fewer groups; a request arriving alone waits that much longer for its first token; 0: off "
        "(measured without gain: bench/HISTORY.md).",
    )
    idle_gather_ms: float = Field(
        10.0,
        ge=0,
        description="A request that finds its model idle waits until no other request has arrived for this long "
        "(at most 4 times as long from the first), so that a burst starts as one prefill group instead of one "
        "request alone and the rest after it; a full group starts at once, a lone request waits it all unless "
        "fewer than 64 of its prompt tokens are left to prefill (a prefix-cache hit, a short question); 0: off "
        "(what it gains a burst and costs a lone request: bench/HISTORY.md).",
    )
    prefix_cache_gb: float = Field(
        2.0,
        ge=0,
        description="Memory (GB) for reusable prompt KV caches, least recently used out (0: off); hits shorter "
        "than 32 tokens are not used.",
    )
    image_cache_gb: float = Field(
        0.5,
        ge=0,
        description="Memory (GB) per vision model for image features kept by content, so a chat's next turn about "
        "the same image does not read it again (0: off).",
    )
    vision_max_pixels: int = Field(
        1024 * 1024,
        ge=3136,
        description="Largest image area a vision model sees: larger images are scaled down first (the model's own "
        "bound applies when smaller); bounds the vision tower's memory and time.",
    )
    pdf_mode: Literal["images", "text", "both"] | None = Field(
        None,
        description="How PDFs reach a model: images (each page rendered), text (the text layer with page markers) "
        "or both; null: images for vision models, text for the others.",
    )
    reuse_reply_tokens: bool = Field(
        True,
        description="A reply that a chat's next turn sends back unchanged (plain content, not cut by a stop "
        "string) is encoded as the tokens the model generated, so the prefix cache covers it; re-encoding its text "
        "may spell it with other tokens, and everything from there on is prefilled again; false: always encode the "
        "text (the same conversation then always gets the same prompt tokens, whatever the server saw before).",
    )
    keepalive_seconds: float = Field(
        10.0,
        gt=0,
        description="Interval of SSE keep-alive comments while nothing is generated (a model loading, a long prefill).",
    )
    dense_matmul_min_rows: int | None = Field(
        None,
        ge=0,
        description="Quantized layers multiply a batched prefill as one matrix and use the dense matmul on "
        "dequantized weights for inputs of this many rows or more; 0: only the first; null: both on CUDA (the row "
        "count timed at load), neither elsewhere.",
    )
    flat_decode_min_batch: int | None = Field(
        None,
        ge=0,
        description="Decode steps of this many sequences or more multiply each quantized layer's input as one "
        "matrix instead of a batch of vectors; 0: never; null: timed at load on CUDA (batch sizes 2, 4, ... "
        "max_running_requests), never elsewhere.",
    )
    engine_process: bool = Field(
        True,
        description="Run MLX in a process of its own, apart from the HTTP server: the server's per-token work "
        "(SSE, detokenizing, parsing) never holds up a decode step, and a crash inside MLX restarts the engine "
        "(requests in flight get a retryable 503) instead of the server; false: a thread of the server's process.",
    )
    responses_store_size: int = Field(
        64,
        ge=0,
        description="Recent /v1/responses answers kept in memory (input and output items, least recently used "
        "out) for previous_response_id; store false keeps one out; 0: none kept, previous_response_id is a 400. "
        "Clients that send the whole history (Codex) need none.",
    )
    cudnn_attention: bool = Field(
        False,
        description="CUDA only: cuDNN's fused attention for prompts (it builds a plan for every new prompt length, "
        "tens of ms each, so off by default; bench/HISTORY.md).",
    )

    @field_validator("model_directory")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v

    def resolve_model(self, name: str) -> str:
        """The model id `name` stands for through `model_aliases` (`name` itself when none matches)."""
        if name in self.model_aliases:
            return self.model_aliases[name]
        for pattern, target in self.model_aliases.items():
            if fnmatch.fnmatchcase(name, pattern):
                return target
        return name

    @model_validator(mode="after")
    def _swap_order(self) -> DefaultsConfig:
        if self.swap_high_percent > self.swap_critical_percent:
            raise ValueError("swap_high_percent must not exceed swap_critical_percent")
        return self


class ServerConfig(_Section):
    """`server`: where and how the HTTP server listens."""

    ip: str = Field(
        "127.0.0.1",
        description="Bind address: 127.0.0.1 keeps the server on this machine, 0.0.0.0 exposes it to the network "
        "(then set api_keys).",
    )
    port: int = Field(8800, ge=1, le=65535, description="TCP port.")
    debug: bool = Field(False, description="Debug logging (as log_level debug).")
    api_keys: list[str] = Field(
        default_factory=list,
        description="If set, requests need Authorization: Bearer <key> or x-api-key: <key> (401 otherwise).",
    )
    max_body_mb: float = Field(32.0, gt=0, description="Largest request body (MB) accepted; 413 beyond.")
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins allowed to call the API.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names answered besides loopback ones (localhost, *.localhost, 127.0.0.1, [::1]); a "
        "request arriving on a loopback address that names another host gets 421, which stops DNS rebinding (a web "
        "page cannot drive the API through the user's browser); when set, requests arriving on other addresses are "
        "checked too; '*' accepts any name, '*.example.com' a domain's.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Connections open at once; a request on a connection beyond them gets an immediate 503 with "
        "Retry-After (not a reset); the open-file limit is raised at start so that they fit.",
    )
    request_head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a whole request head (request line and headers), from "
        "its opening or from the first byte of its next request; slower ones get 408 and are closed (idle "
        "keep-alive connections wait 75 s).",
    )
    drain_seconds: float = Field(
        20.0,
        ge=0,
        description="On SIGTERM (every service restart) new requests get 503 with Retry-After, running ones may "
        "finish for this long, then streams end with an error event and [DONE] and other requests with a JSON 503; "
        "keep it below the service manager's stop timeout (40 s).",
    )
    media: MediaLimits = Field(
        default_factory=MediaLimits,
        description="Limits on images and PDFs in requests (image_url and file parts), and remote image URLs; each "
        "refusal is a 400 naming its key (see server.media).",
    )
    log_dir: str | None = Field(
        None,
        description="Folder for rotating log files: mlx_router.log (every record at log_level), mlx_router.error.log "
        "(warnings and errors, with tracebacks) and, with log_json, mlx_router.jsonl; null: the console only; "
        "mlx-router service install runs the server with one (--log-dir: ~/Library/Logs/mlx-router on macOS, "
        "~/.local/state/mlx-router/logs on Linux).",
    )
    log_max_mb: float = Field(10.0, gt=0, description="Size (MB) at which a log file is rotated.")
    log_backup_count: int = Field(
        5, ge=1, description="Rotated files kept of each log file (mlx_router.log.1 is the newest of them)."
    )
    log_json: bool = Field(
        False,
        description="Also write every record as one JSON object a line to mlx_router.jsonl (a request's end line "
        "carries its fields under request), for log shippers.",
    )
    log_console: bool = Field(
        True,
        description="Log to the console (stderr) too; the launchd service turns it off (--no-console-log): launchd "
        "never rotates the file it sends stderr to.",
    )
    metrics_public: bool = Field(
        False,
        description="GET /metrics (Prometheus) answers without an API key, for a scraper that has none; false: it "
        "needs one like every other route when api_keys is set.",
    )

    @field_validator("log_dir")
    @classmethod
    def _expand_log_dir(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v


class ModelSettings(_Section):
    """`models.<id>`: per-model request defaults and capabilities."""

    max_tokens: int | None = Field(None, gt=0, description="Default max_tokens for this model's requests.")
    temp: float | None = Field(None, ge=0, le=2, description="Default temperature (the request's wins).")
    top_p: float | None = Field(None, gt=0, le=1, description="Default top_p.")
    top_k: int | None = Field(None, ge=0, description="Default top_k (0: off).")
    min_p: float | None = Field(None, ge=0, le=1, description="Default min_p (0: off).")
    repetition_penalty: float | None = Field(None, gt=0, description="Default repetition penalty.")
    chat_template: str | None = Field(
        None,
        description="A built-in template (llama3, qwen, chatml, deepseek, phi4, gpt-oss, generic) or inline Jinja; "
        "null: the tokenizer's own, else generic.",
    )
    reasoning_response: Literal["enable", "disable"] | None = Field(
        None,
        description="enable or disable the model's thinking by default (chat_template_kwargs.enable_thinking "
        "overrides).",
    )
    required_memory_gb: float | None = Field(
        None, gt=0, description="Memory (GB) the model needs (null: estimated from its weights)."
    )
    supports_tools: bool | None = Field(
        None, description="Offer tools to this model (null: when its tool-call format is known)."
    )
    supports_vision: bool | None = Field(
        None,
        description="false serves a vision model as text only (its images get a 400, never dropped silently); "
        "null: from its config.json (a vision_config).",
    )
    embedding: bool | None = Field(
        None,
        description="true serves this model on /v1/embeddings only (last-token pooling for a decoder, mean for a "
        "BERT-like encoder, L2-normalised, unless its sentence-transformers files say otherwise); false serves "
        "it as a chat model; null: an embedding model when its folder has sentence-transformers' modules.json "
        "with a Pooling module (Qwen3-Embedding) or its model_type is a BERT-like encoder.",
    )
    vision_max_pixels: int | None = Field(None, ge=3136, description="defaults.vision_max_pixels for this model.")
    vision_path: Literal["handover", "solo"] | None = Field(
        None,
        description="handover: mlx-vlm reads the images and the shared batch decodes (Qwen2-VL, Qwen2.5-VL, "
        "Qwen3-VL, Gemma 3); solo: mlx-vlm's own generation, one request at a time (any family mlx-vlm knows); "
        "null: chosen by family.",
    )
    pdf_mode: Literal["images", "text", "both"] | None = Field(None, description="defaults.pdf_mode for this model.")
    memory_pressure_max_tokens: dict[PressureLevel, int] = Field(
        default_factory=dict,
        description='Cap on max_tokens per memory pressure level, e.g. {"moderate": 4096, "high": 1024}.',
    )
    tool_parser: str | None = Field(
        None,
        description="Tool-call format: hermes, qwen3_coder, llama3_json, mistral, harmony or deepseek_v3 (null: "
        "detected from the chat template and vocabulary).",
    )
    reasoning_parser: str | None = Field(None, description="Reasoning format: think or harmony (null: detected).")
    max_context_tokens: int | None = Field(
        None, gt=0, description="Longest prompt + output accepted (null: the model's max_position_embeddings)."
    )

    @field_validator("memory_pressure_max_tokens")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        for level, n in v.items():
            if n <= 0:
                raise ValueError(f"{level}: must be > 0")
        return v


class DistributedConfig(_Section):
    """`distributed`: serving one model from several machines (ranks started by `mlx.launch`, or by hand with
    MLX_RANK and MLX_HOSTFILE); ignored when the server is started as one process."""

    parallel: Literal["tensor", "pipeline"] = Field(
        "tensor",
        description="How a model is split over the ranks: tensor (every layer's weights split, mlx-lm's "
        "model.shard(); most architectures) or pipeline (each rank holds a run of whole layers; the architectures "
        "whose mlx-lm model has pipeline(), e.g. qwen2, qwen3_moe, deepseek_v3).",
    )
    backend: Literal["any", "ring", "jaccl", "mpi", "nccl"] = Field(
        "any",
        description="mx.distributed backend: any (the one mlx.launch set up), ring (TCP), jaccl (RDMA over "
        "Thunderbolt), mpi, nccl (CUDA).",
    )
    step_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a step of the group (or the wait for one) may take before a rank is taken for hung: "
        "the server then answers 503 and exits non-zero, for its supervisor to restart the group.",
    )
    load_timeout_s: float = Field(
        1800.0, gt=0, description="Seconds a model load (all ranks together, warm-up included) may take."
    )
    join_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Seconds a rank waits at start-up for the others to join the group; then it ends (SIGALRM; "
        "rank 0's server fails its start-up) for its supervisor to start the group again.",
    )
    idle_round_ms: float = Field(
        20.0,
        gt=0,
        description="While no request runs, rank 0 runs an empty round this often and the other ranks sleep "
        "between rounds (MLX's collective wait spins a CPU core): a rank that died is noticed within it, and a "
        "request arriving at an idle group waits up to it.",
    )


class Settings(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="allow")

    defaults: DefaultsConfig = Field(
        default_factory=DefaultsConfig, description="Server-wide request defaults and resource limits."
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="Where and how the HTTP server listens.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Serving a model from several machines (see README)."
    )
    models: dict[str, ModelSettings] = Field(
        default_factory=dict,
        description="Per-model request defaults and capabilities, by model id (or its last path segment).",
        json_schema_extra={"patternProperties": {"^_": {}}},  # _help and other comments are not models
    )
    _extra_model_dirs: list[Path] = PrivateAttr(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _skip_comments(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: m for k, m in v.items() if not str(k).startswith("_")}
        return v

    def add_model_dir(self, path: Path) -> None:
        """Serve models from one more folder (the demo model's), after the configured one."""
        self._extra_model_dirs.append(path)

    def model_settings(self, model_id: str) -> ModelSettings:
        """The `models` entry for `model_id` (exact id, else its last path segment), or empty settings."""
        if model_id in self.models:
            return self.models[model_id]
        short = model_id.rsplit("/", 1)[-1]
        return self.models.get(short, ModelSettings())

    def vision_path(self, entry: Any) -> Literal["handover", "solo"] | None:
        """How `entry` (a discovered ModelEntry) is run: "handover" (mlx-vlm prefills images, the shared batch
        decodes), "solo" (mlx-vlm's own generation, one request at a time: families mlx-lm has no text class
        for, even with `supports_vision: false`), or None (mlx-lm alone: a text model, or a vision model whose
        images are off)."""
        from mlx_router.vision.spec import HANDOVER_FAMILIES, mlx_vlm_has_family

        ms = self.model_settings(entry.id)
        if entry.vision is None:
            return None
        if ms.supports_vision is False:
            return None if getattr(entry, "text_class", True) else "solo"
        if ms.vision_path is not None:
            return ms.vision_path
        if entry.vision in HANDOVER_FAMILIES:
            return "handover"
        return "solo" if mlx_vlm_has_family(entry.vision) else None

    def embedding_spec(self, entry: Any) -> EmbeddingSpec | None:
        """How `entry` (a discovered ModelEntry) makes embedding vectors (an `EmbeddingSpec`), or None when it is
        a generative model; `models.<id>.embedding` overrides what discovery found."""
        forced = self.model_settings(entry.id).embedding
        found = getattr(entry, "embedding", None)
        if forced is False:
            return None
        if forced is True and found is None:
            return default_spec(read_json(entry.path / "config.json"), f"models.{entry.id}.embedding")
        return found

    def vision_enabled(self, entry: Any) -> bool:
        """Whether `entry` takes images: a vision model served with its tower, `supports_vision` not false."""
        return self.model_settings(entry.id).supports_vision is not False and self.vision_path(entry) is not None

    def model_dirs(self) -> list[Path]:
        d = self.defaults.model_directory
        return ([Path(d)] if d else []) + list(self._extra_model_dirs)

    def unknown_keys(self) -> list[str]:
        keys = [f"{k}" for k in (self.model_extra or {}) if not k.startswith("_") and k != "$schema"]
        keys += [f"defaults.{k}" for k in self.defaults.unknown_keys()]
        keys += [f"server.{k}" for k in self.server.unknown_keys()]
        keys += [f"server.media.{k}" for k in self.server.media.unknown_keys()]
        keys += [f"distributed.{k}" for k in self.distributed.unknown_keys()]
        for name, m in self.models.items():
            keys += [f"models.{name}.{k}" for k in m.unknown_keys()]
        return keys


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{source}: {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_settings(data: dict[str, Any], source: str = "config") -> Settings:
    """Validate a config mapping; raise ConfigError naming each bad key; warn about unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
    for key in settings.unknown_keys():
        logger.warning("%s: unknown key %r is ignored", source, key)
    return settings


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Read and validate a config file (None: built-in defaults). `MLX_MODEL_DIR` overrides model_directory."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON: {e}") from None
    settings = parse_settings(data, source)
    if env.get("MLX_MODEL_DIR"):
        settings.defaults.model_directory = os.path.expanduser(env["MLX_MODEL_DIR"])
    return settings
