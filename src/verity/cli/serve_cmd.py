"""``verity serve MODEL``: serve a local model over an OpenAI-compatible HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

from verity.cli.derive import add_dataclass_args, build_config
from verity.config import ChatTemplateFlags, flag
from verity.errors import ConfigError
from verity.types import DType


@dataclass
class ServeConfig(ChatTemplateFlags):
    model: str = flag(positional=True)
    """Model to serve: local HF directory, hub id or `verity-tiny`."""
    host: str = flag("--host", default="127.0.0.1")
    """Interface to bind (loopback by default; any other needs --api-key-env, or --insecure)."""
    port: int = flag("--port", default=8000)
    """TCP port."""
    api_key_env: str | None = flag("--api-key-env", default=None)
    """Environment variable holding the API key clients must send as 'Authorization: Bearer KEY'."""
    max_batch_size: int = flag("--max-batch-size", default=32)
    """Most sequences generated together in one batch (1 = one request at a time)."""
    max_queue: int = flag("--max-queue", default=256)
    """Most unfinished requests held; more are refused with 429."""
    served_model_name: str | None = flag("--served-model-name", default=None)
    """Model id clients send in 'model' (default: MODEL as given)."""
    default_max_tokens: int = flag("--default-max-tokens", default=512)
    """Completion tokens when a request sets no max_tokens (capped by the context length)."""
    max_kv_tokens: int = flag("--max-kv-tokens", default=0)
    """KV-cache positions that running batches may hold (sequences × (prompt + max_tokens)): a request needing
    more is refused with 400, one that does not fit beside the running batch waits (0 = 90% of the free
    accelerator memory after loading; no limit on a CPU)."""
    dtype: DType = flag("--dtype", default="auto")
    """Weights dtype (auto = bf16 on hardware that is fast at it)."""
    log_level: Literal["debug", "info", "warning", "error"] = flag("--log-level", default="warning")
    """uvicorn log level."""
    header_timeout: float = flag("--header-timeout", default=10.0)
    """Seconds a client has to send a request's headers; a slower one gets 408 and is disconnected."""
    body_timeout: float = flag("--body-timeout", default=60.0)
    """Seconds a client has to send a request's body after its headers (408 and disconnect after)."""
    insecure: bool = flag("--insecure", default=False)
    """Allow a non-loopback --host without --api-key-env (anyone who can reach the port can use it)."""

    def validate(self) -> None:
        self.check_chat_flags()
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: must be 0..65535")
        if self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size {self.max_batch_size}: must be >= 1")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue {self.max_queue}: must be >= 1")
        if self.max_kv_tokens < 0:
            raise ConfigError(f"--max-kv-tokens {self.max_kv_tokens}: must be >= 0 (0 = auto)")
        if self.default_max_tokens < 1:
            raise ConfigError(f"--default-max-tokens {self.default_max_tokens}: must be >= 1")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ConfigError(f"--api-key-env {self.api_key_env}: environment variable is not set or empty")
        for name in ("header_timeout", "body_timeout"):
            v = getattr(self, name)
            if not v > 0:
                raise ConfigError(f"--{name.replace('_', '-')} {v}: must be > 0 seconds")
        if self.api_key_env is None and not self.insecure and not _loopback(self.host):
            raise ConfigError(f"--host {self.host}: serving beyond this machine without an API key lets anyone who "
                              "can reach the port use it; set --api-key-env VAR, or pass --insecure to allow it")


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: may resolve to any interface
        return False


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible API",
                       description="Serve a local model at /v1/chat/completions and /v1/completions, "
                                   "batching concurrent requests together.")
    add_dataclass_args(p, ServeConfig)


def build_app(cfg: ServeConfig) -> Any:
    """Load the model and build the FastAPI app for ``cfg``."""
    from verity.rollout.hf_sampler import HFSampler
    from verity.serve.app import create_app
    from verity.serve.batcher import auto_kv_tokens

    sampler = HFSampler.from_pretrained(cfg.model, batch_size=cfg.max_batch_size, dtype=cfg.dtype,
                                        chat_template=cfg.chat_template, template_kwargs=cfg.template_kwargs())
    key = os.environ[cfg.api_key_env] if cfg.api_key_env else None
    return create_app(sampler, cfg.served_model_name or cfg.model, api_key=key, max_batch_size=cfg.max_batch_size,
                      max_queue=cfg.max_queue, default_max_tokens=cfg.default_max_tokens,
                      max_kv_tokens=cfg.max_kv_tokens or auto_kv_tokens(sampler.model))


def run(args: argparse.Namespace, argv: list[str]) -> int:
    cfg = build_config(ServeConfig, args, argv)
    cfg.validate()
    import uvicorn

    from verity.serve.http import deadline_protocol

    app = build_app(cfg)
    name = cfg.served_model_name or cfg.model
    print(f"verity serve: {name!r} at http://{cfg.host}:{cfg.port}/v1 (max batch {cfg.max_batch_size}, "
          f"queue {cfg.max_queue}{', API key required' if cfg.api_key_env else ''})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_graceful_shutdown=5,
                http=deadline_protocol(cfg.header_timeout, cfg.body_timeout))
    return 0
