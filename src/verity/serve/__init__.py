"""``verity serve``: an OpenAI-compatible HTTP server for in-process Hugging Face models.

:func:`~verity.serve.app.create_app` builds the FastAPI app; :class:`~verity.serve.batcher.Batcher`
groups concurrent requests into one generation batch (bounded queue, 429 when full).
"""

from typing import TYPE_CHECKING

from verity.serve.batcher import Batcher, QueueFull

if TYPE_CHECKING:
    from verity.serve.app import create_app

__all__ = ["Batcher", "QueueFull", "create_app"]


def __getattr__(name: str):  # lazy: importing the batcher should not import FastAPI
    if name == "create_app":
        from verity.serve.app import create_app

        return create_app
    raise AttributeError(name)
