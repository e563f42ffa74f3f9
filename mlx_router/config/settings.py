"""The configuration file (`config.json`) as typed, validated pydantic models.

The file keeps the shape users of mlx-router know: `defaults`, `server`, `models`. A wrong type or value fails at
start-up with the key's dotted name; an unknown key is kept out and logged as a warning (a typo must not pass
silently, and must not stop a service either).
"""

from __future__ import annotations

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

    max_tokens: int = Field(4096, gt=0, description="Tokens generated when a request does not say.")
    timeout: float = Field(300.0, gt=0, description="Seconds one request may take in all (queue, load, generation).")
    cache_size: int = Field(2, ge=1, description="How many models stay loaded at once.")
    memory_threshold_gb: float = Field(
        4.0,
        ge=0,
        description="Available memory (GB) under which memory pressure rises; see MEMORY_PRESSURE.md.",
    )
    safety_margin: float = Field(1.2, gt=0, description="Factor on a model's memory estimate when budgeting.")
    swap_high_percent: float = Field(75.0, ge=0, le=100, description="Swap use that counts as high pressure.")
    swap_critical_percent: float = Field(90.0, ge=0, le=100, description="Swap use that counts as critical.")
    stream: bool = Field(
        False,
        description="Stream when a request does not say and its Accept header names text/event-stream or "
        "application/x-ndjson (a client that omits stream otherwise gets JSON, as OpenAI's API answers).",
    )
    stream_chunk_size: int = Field(1, ge=1, description="Tokens grouped into one streamed event.")
    streaming_format: Literal["sse", "json_lines", "json_array"] = "sse"
    warmup_tokens: int | None = Field(
        None,
        ge=0,
        description="Tokens each warm-up request generates when a model loads; a batch stage's requests go on "
        "until all its rows have decoded together (0: no warm-up; null: 3 on CUDA, where kernels compile on first "
        "use, 0 elsewhere).",
    )
    warmup_batch_sizes: list[int] | None = Field(
        None,
        description="Batch sizes the warm-up runs, each until all its rows decode together (null: 1, 2, 4, ... "
        "up to max_running_requests when it is on).",
    )
    enable_function_calling: bool = Field(True, description="Offer `tools` to models and parse their calls.")
    constrain_tool_calls: bool = Field(
        True,
        description="With tool_choice auto, constrain calls the model starts to valid markup and schemas.",
    )
    model: str | None = Field(None, description="A model to load at start-up.")
    model_directory: str | None = Field(None, description="Folder of MLX models (MLX_MODEL_DIR overrides).")
    # keys new in 3.0
    scan_hf_cache: bool = Field(True, description="Also serve models found in the Hugging Face hub cache.")
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        description="Memory the loaded models may use in all; default: total memory less the threshold.",
    )
    max_running_requests: int = Field(32, ge=1, description="Requests decoded together per model.")
    max_queued_requests: int = Field(256, ge=0, description="Requests waiting per model before 429.")
    prefill_step_size: int = Field(512, ge=16, description="Prompt tokens processed per step (chunked prefill).")
    prefill_batch_tokens: int = Field(
        4096, ge=16, description="Prompt tokens prefilled together between two decode steps (several prompts at once)."
    )
    prefill_gather_ms: float = Field(
        0.0,
        ge=0,
        description="While a model's batch decodes, hold newly arrived requests up to this long so that a burst "
        "is prefilled in fewer groups (0: off).",
    )
    idle_gather_ms: float = Field(
        10.0,
        ge=0,
        description="A request that finds its model idle waits until no other has arrived for this long (at most "
        "4 times as long from the first), so that a burst starts as one prefill group (a full group starts at once; "
        "a lone request waits it all unless fewer than 64 of its prompt tokens are left to prefill, as on a "
        "prefix-cache hit; 0: off).",
    )
    prefix_cache_gb: float = Field(2.0, ge=0, description="Memory for reusable prompt KV caches (0: off).")
    image_cache_gb: float = Field(
        0.5, ge=0, description="Memory per vision model for image features kept by content (0: off)."
    )
    vision_max_pixels: int = Field(
        1024 * 1024,
        ge=3136,
        description="Largest image area (pixels) a vision model sees: larger images are scaled down (the model's "
        "own max_pixels applies when it is smaller). Bounds the vision tower's memory and time.",
    )
    pdf_mode: Literal["images", "text", "both"] | None = Field(
        None,
        description="How PDFs reach a model: page images, the text layer (with page markers), or both; unset: "
        "images for vision models, text for the others.",
    )
    reuse_reply_tokens: bool = Field(
        True,
        description="When a chat's next turn sends a reply back unchanged, encode it as the tokens the model "
        "generated rather than re-encoding its text (which may spell it differently), so the prefix cache covers "
        "it whole.",
    )
    keepalive_seconds: float = Field(10.0, gt=0, description="SSE comment interval while nothing is generated.")
    dense_matmul_min_rows: int | None = Field(
        None,
        ge=0,
        description="Quantized layers multiply a batched prefill as one matrix and use the dense matmul on "
        "dequantized weights from this many rows on; 0: only the first; null: both on CUDA (timed at load), "
        "neither elsewhere.",
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
        description="Run MLX in a process of its own, apart from the HTTP server (false: a thread of the server).",
    )
    cudnn_attention: bool = Field(
        False,
        description="CUDA only: cuDNN's fused attention for prompts (builds a plan per new prompt length).",
    )

    @field_validator("model_directory")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v

    @model_validator(mode="after")
    def _swap_order(self) -> DefaultsConfig:
        if self.swap_high_percent > self.swap_critical_percent:
            raise ValueError("swap_high_percent must not exceed swap_critical_percent")
        return self


class ServerConfig(_Section):
    """`server`: where and how the HTTP server listens."""

    ip: str = Field("127.0.0.1", description="Bind address; 0.0.0.0 exposes the server to the network.")
    port: int = Field(8800, ge=1, le=65535)
    debug: bool = False
    api_keys: list[str] = Field(default_factory=list, description="If set, requests need `Authorization: Bearer`.")
    max_body_mb: float = Field(32.0, gt=0, description="Largest request body accepted (413 beyond).")
    cors_origins: list[str] = Field(default_factory=list, description="Browser origins allowed (CORS).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers to besides loopback ones (localhost, 127.0.0.1, [::1]); "
        "requests arriving on a loopback address that name another host get 421, which stops DNS rebinding. "
        "When set, requests on other addresses are checked too; '*' accepts any name, '*.example.com' a domain.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections at once; a request on a connection beyond them gets 503 with Retry-After.",
    )
    request_head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a whole request head (line and headers) once it "
        "starts one or opens; slower ones are closed.",
    )
    drain_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM, how long running requests may go on before they are ended with an error."
    )
    media: MediaLimits = Field(default_factory=MediaLimits, description="Limits on images and PDFs in requests.")
    log_dir: str | None = Field(
        None,
        description="Folder for rotating log files: mlx_router.log (every record at log_level), mlx_router.error.log "
        "(warnings and errors) and, with log_json, mlx_router.jsonl; null: the console only. The user service "
        "passes one (--log-dir).",
    )
    log_max_mb: float = Field(10.0, gt=0, description="Size (MB) at which a log file is rotated.")
    log_backup_count: int = Field(
        5, ge=1, description="Rotated files kept of each log file (mlx_router.log.1 is the newest of them)."
    )
    log_json: bool = Field(
        False, description="Also write every record as one JSON object a line (mlx_router.jsonl), for log shippers."
    )
    log_console: bool = Field(
        True,
        description="Log to the console (stderr) too; the launchd service turns it off (--no-console-log): launchd "
        "never rotates the file it sends stderr to.",
    )
    metrics_public: bool = Field(
        False,
        description="GET /metrics answers without an API key (for a scraper that has none); with no api_keys "
        "configured every route is open anyway.",
    )

    @field_validator("log_dir")
    @classmethod
    def _expand_log_dir(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v


class ModelSettings(_Section):
    """`models.<id>`: per-model request defaults and capabilities."""

    max_tokens: int | None = Field(None, gt=0)
    temp: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    chat_template: str | None = None
    reasoning_response: Literal["enable", "disable"] | None = None
    required_memory_gb: float | None = Field(None, gt=0)
    supports_tools: bool | None = None
    supports_vision: bool | None = None
    vision_max_pixels: int | None = Field(None, ge=3136, description="defaults.vision_max_pixels for this model.")
    vision_path: Literal["handover", "solo"] | None = Field(
        None,
        description="handover: mlx-vlm reads the images, the shared batch decodes (Qwen-VL, Gemma 3); solo: "
        "mlx-vlm's own generation, one request at a time (any family mlx-vlm knows); null: chosen by family.",
    )
    pdf_mode: Literal["images", "text", "both"] | None = None
    memory_pressure_max_tokens: dict[PressureLevel, int] = Field(default_factory=dict)
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    max_context_tokens: int | None = Field(None, gt=0, description="Longest prompt+output accepted.")

    @field_validator("memory_pressure_max_tokens")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        for level, n in v.items():
            if n <= 0:
                raise ValueError(f"{level}: must be > 0")
        return v


class Settings(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="allow")

    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
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
        """How `entry` (a discovered ModelEntry) reads images: "handover" (mlx-vlm prefills, the shared batch
        decodes), "solo" (mlx-vlm's own generation, one request at a time), or None (a text model, or
        `supports_vision: false`)."""
        from mlx_router.vision.spec import HANDOVER_FAMILIES, mlx_vlm_has_family

        ms = self.model_settings(entry.id)
        if ms.supports_vision is False or entry.vision is None:
            return None
        if ms.vision_path is not None:
            return ms.vision_path
        if entry.vision in HANDOVER_FAMILIES:
            return "handover"
        return "solo" if mlx_vlm_has_family(entry.vision) else None

    def vision_enabled(self, entry: Any) -> bool:
        """Whether `entry` is served with its vision tower (see `vision_path`)."""
        return self.vision_path(entry) is not None

    def model_dirs(self) -> list[Path]:
        d = self.defaults.model_directory
        return ([Path(d)] if d else []) + list(self._extra_model_dirs)

    def unknown_keys(self) -> list[str]:
        keys = [f"{k}" for k in (self.model_extra or {}) if not k.startswith("_")]
        keys += [f"defaults.{k}" for k in self.defaults.unknown_keys()]
        keys += [f"server.{k}" for k in self.server.unknown_keys()]
        keys += [f"server.media.{k}" for k in self.server.media.unknown_keys()]
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
