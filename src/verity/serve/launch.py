"""Start ``verity serve`` as a subprocess on a free loopback port (for tests, benchmarks and scripts).

>>> with ServerProcess("path/to/model", "--served-model-name", "tiny") as srv:  # doctest: +SKIP
...     openai.OpenAI(base_url=srv.base_url, api_key="x")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``verity serve MODEL ARGS…`` on 127.0.0.1:free-port; waits for /health, stops on exit."""

    def __init__(self, model: str, *args: str, env: Mapping[str, str] | None = None, startup_timeout: float = 120.0,
                 port: int | None = None):
        self.model, self.args = model, list(args)
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        # lives as long as this object: log() reads it after the server has stopped
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "verity", "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"verity serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"verity serve did not become ready in {self.startup_timeout:.0f}s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-5000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
