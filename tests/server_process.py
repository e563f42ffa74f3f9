"""A real mlx-router process on a free port, for end-to-end tests with the official openai client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RouterServer:
    """Starts `python -m mlx_router --config <tmp>/config.json` and stops it again."""

    def __init__(
        self, workdir: Path, config: dict[str, Any], demo: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.demo = demo
        self.extra_env = env or {}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = json.loads(json.dumps(config))
        config.setdefault("server", {})
        config["server"].update({"ip": "127.0.0.1", "port": self.port})
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> RouterServer:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env.pop("MLX_MODEL_DIR", None)
        env.update(self.extra_env)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_router", "--config", str(self.config_path)]
            + ([] if self.demo else ["--no-demo"]),
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("api_key", "not-needed")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60)
        return openai.OpenAI(base_url=self.base_url + "/v1", **kwargs)

    def health(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/v1/health", timeout=10).json()

    def __enter__(self) -> RouterServer:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
