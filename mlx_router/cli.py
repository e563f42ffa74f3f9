"""Command line: `mlx-router --config config.json [--host H] [--port P] [--model-dir DIR]`.

`mlx-router service install|uninstall|status` manages the user service instead (mlx_router/service/cli.py);
`mlx-router models list|download|link|tune` lists, adds and tunes models (mlx_router/tools/cli.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlx_router import __version__
from mlx_router.config.ranks import launch_rank
from mlx_router.config.settings import ConfigError, Settings, load_settings
from mlx_router.observability.logs import LogConfig, configure_logging

logger = logging.getLogger("mlx_router")
STARTUP_FAILURE = 3  # uvicorn's exit status when the server did not start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlx-router",
        description="An OpenAI-compatible HTTP server for MLX models. Flags override the config file.",
        epilog="`mlx-router service install|uninstall|status` runs the server as a user service; "
        "`mlx-router models list|download|link|tune` lists, adds and tunes models.",
    )
    p.add_argument("--config", "-c", metavar="PATH", help="config.json to read (default: built-in defaults)")
    p.add_argument("--host", help="address to bind (config: server.ip; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (config: server.port; default 8800)")
    p.add_argument("--model-dir", metavar="DIR", help="folder of MLX models (config: defaults.model_directory)")
    p.add_argument("--model", metavar="ID", help="model to load at start-up (config: defaults.model)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="logging detail")
    p.add_argument("--log-dir", metavar="DIR", help="write rotating log files here (config: server.log_dir)")
    p.add_argument(
        "--no-console-log", action="store_true", help="log to the files only (config: server.log_console false)"
    )
    p.add_argument("--no-demo", action="store_true", help="do not build the demo model when no model is found")
    p.add_argument("--version", action="version", version=f"mlx-router {__version__}")
    return p


def apply_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    if args.host:
        settings.server.ip = args.host
    if args.port:
        settings.server.port = args.port
    if args.model_dir:
        settings.defaults.model_directory = os.path.expanduser(args.model_dir)
    if args.model:
        settings.defaults.model = args.model
    if args.log_level:
        settings.server.log_level = args.log_level
    if args.log_dir:
        settings.server.log_dir = os.path.expanduser(args.log_dir)
    if args.no_console_log:
        settings.server.log_console = False
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["service"]:  # sub-commands; with none, the server runs as before
        from mlx_router.service.cli import main as service_main

        return service_main(argv[1:])
    if argv[:1] == ["models"]:
        from mlx_router.tools.cli import main as models_main

        return models_main(argv[1:])
    args = build_parser().parse_args(argv)
    # The MLX worker and the event loop share the GIL: hand it over within 1 ms instead of the default 5 ms,
    # so a token the worker produced reaches the client without waiting out the other thread's time slice.
    sys.setswitchinterval(0.001)
    # No network at request time: Hugging Face libraries must read local files only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        settings = apply_overrides(load_settings(args.config), args)
    except ConfigError as e:
        print(f"mlx-router: invalid configuration\n{e}", file=sys.stderr)
        return 2
    level = "debug" if settings.server.debug else settings.server.log_level
    handlers = configure_logging(log_config(settings, level))
    try:
        rank = launch_rank(os.environ)
    except ValueError as e:
        print(f"mlx-router: {e}", file=sys.stderr)
        return 2
    if rank is not None and rank > 0:  # a distributed launch's other ranks serve no HTTP: they follow rank 0
        from mlx_router.core.follower import run_follower

        return run_follower(settings)
    try:
        from mlx_router.startup import prepare_models

        prepare_models(settings, allow_demo=not args.no_demo)
    except ConfigError as e:
        print(f"mlx-router: invalid configuration\n{e}", file=sys.stderr)
        return 2
    import uvicorn

    from mlx_router.app import create_app

    logger.info("mlx-router %s on http://%s:%d", __version__, settings.server.ip, settings.server.port)
    if settings.server.log_dir:
        logger.info("logging to %s", os.path.abspath(settings.server.log_dir))
    try:
        _serve(uvicorn, create_app(settings), settings, level)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly and re-raised the signal it caught
        pass
    finally:
        for handler in handlers:
            handler.close()
    return 0


def log_config(settings: Settings, level: str) -> LogConfig:
    """The logging the settings ask for (`server.log_*`)."""
    s = settings.server
    return LogConfig(
        level=level,
        directory=Path(s.log_dir) if s.log_dir else None,
        max_bytes=int(s.log_max_mb * 1024**2),
        backup_count=s.log_backup_count,
        json_lines=s.log_json,
        console=s.log_console,
    )


def _serve(uvicorn: Any, app: Any, settings: Settings, level: str) -> None:
    from mlx_router.api.connections import bounded_http_protocol, raise_fd_limit
    from mlx_router.api.drain import drain
    from mlx_router.server import DrainingServer

    raise_fd_limit(settings.server.max_connections)
    config = uvicorn.Config(
        app,
        host=settings.server.ip,
        port=settings.server.port,
        log_level=level,
        # uvicorn's records go through the root logger's handlers (console, files) like the server's own; its
        # access log is off: every request's end line (observability/requests.py) says more, with the request id
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Clients keep idle connections in pools (the OpenAI SDK, httpx) and reuse them later; with uvicorn's
        # 5 s default the server may close one just as a request goes out on it ("Server disconnected
        # without sending a response", seen in this project's tests). Idle connections cost next to nothing.
        timeout_keep_alive=75,
        # uvicorn bounds neither open connections nor the time a request head may take (api/connections.py)
        http=bounded_http_protocol(settings.server.max_connections, settings.server.request_head_timeout),
    )
    # SIGTERM drains the app first (mlx_router/server.py); uvicorn.run would cut running requests without a word.
    server = DrainingServer(config, lambda seconds, hurry: drain(app, seconds, hurry), settings.server.drain_seconds)
    app.state.exit_soon = server.exit_soon
    server.run()
    if not server.started:  # the port was taken, or the app did not start: as uvicorn.run exits
        raise SystemExit(STARTUP_FAILURE)
    exit_code = getattr(app.state, "exit_code", 0)
    if exit_code:
        raise SystemExit(exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
