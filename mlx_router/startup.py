"""Start-up checks that need more than pydantic: names of templates and parsers, model folders, the demo."""

from __future__ import annotations

import logging
from pathlib import Path

from mlx_router.config.discovery import ModelDiscovery, default_hf_cache_dirs
from mlx_router.config.settings import ConfigError, Settings
from mlx_router.parsing.registry import UnknownParserError, get_reasoning_parser, get_tool_parser
from mlx_router.serving.templates import BUILTIN_TEMPLATES, is_inline_template

logger = logging.getLogger(__name__)


def validate_names(settings: Settings) -> None:
    """Every configured template and parser name must exist; the error lists the valid ones."""
    problems = []
    for model_id, ms in settings.models.items():
        tpl = ms.chat_template
        if tpl and not is_inline_template(tpl) and tpl not in BUILTIN_TEMPLATES:
            problems.append(
                f"models.{model_id}.chat_template: unknown template {tpl!r}; "
                f"valid: {', '.join(BUILTIN_TEMPLATES)} (or an inline Jinja template)"
            )
        for key, getter in (("tool_parser", get_tool_parser), ("reasoning_parser", get_reasoning_parser)):
            name = getattr(ms, key)
            if name:
                try:
                    getter(name)
                except UnknownParserError as e:
                    problems.append(f"models.{model_id}.{key}: {e}")
    if problems:
        raise ConfigError("\n".join(problems))


def prepare_models(settings: Settings, allow_demo: bool = True) -> None:
    """Validate names; warn about a missing model folder; fall back to the demo model when none is found."""
    validate_names(settings)
    hf = default_hf_cache_dirs() if settings.defaults.scan_hf_cache else []
    found = ModelDiscovery(settings.model_dirs(), hf).scan()
    if found:
        logger.info("found %d model(s): %s", len(found), ", ".join(sorted(found)[:10]))
        return
    if not allow_demo:
        logger.warning("no models found; requests will get 404 until one is installed")
        return
    from mlx_router.demo import DEMO_MODEL_ID, VISION_MODEL_ID, ensure_demo_model, ensure_demo_vision_model

    try:
        path = ensure_demo_model()
    except OSError as e:  # e.g. an unwritable cache folder: serve without the demo
        logger.error("could not build the demo model (%s); set MLX_ROUTER_CACHE to a writable folder", e)
        return
    served = [DEMO_MODEL_ID]
    try:
        ensure_demo_vision_model()  # beside the text demo, in the same folder
        served.append(VISION_MODEL_ID)
    except Exception as e:  # the text demo still serves; say why the vision one is missing
        logger.error("could not build the vision demo model %r (%s); serving the text demo only", VISION_MODEL_ID, e)
    settings.add_model_dir(Path(path).parent)
    logger.info(  # a fresh install's normal start, not a fault
        "no models found in %s: serving the built-in demo models %s (tiny models trained to answer a few "
        "example prompts; install real MLX models to use the server for real)",
        ", ".join(str(d) for d in settings.model_dirs()[:-1]) or "(no model_directory set)",
        ", ".join(repr(m) for m in served),
    )
