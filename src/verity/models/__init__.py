"""Model loading: resolve names (``verity-tiny``, local dirs, hub ids) and pick dtype/device."""

from verity.models.loading import load_model, load_tokenizer, resolve_model

__all__ = ["load_model", "load_tokenizer", "resolve_model"]
