"""Sandboxed execution of untrusted (model-written) code; see :mod:`verity.sandbox.runner`."""

from verity.sandbox.runner import (
    LAYERS,
    SandboxLayer,
    SandboxLimits,
    SandboxUnavailable,
    active_layer,
    available_layers,
    get_layer,
    run_python,
)
from verity.types import SandboxResult

__all__ = ["LAYERS", "SandboxLayer", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "active_layer",
           "available_layers", "get_layer", "run_python"]
