"""Shared fixtures: an offline environment for every test and one tiny random-init model per session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    """No network, no tokenizer thread pools: tests run offline and small."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A random-init Qwen2 model (hidden 64, 2 layers, vocab 512) + BPE tokenizer, built once per session."""
    import torch

    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model

    torch.set_num_threads(int(os.environ.get("VERITY_TEST_THREADS", "2")))
    out = tmp_path_factory.mktemp("tiny_model")
    return make_tiny_model(str(out), tokenizer_corpus(), vocab_size=512, hidden_size=64, num_layers=2)


def pytest_terminal_summary(terminalreporter):
    """Print how many generated cases the verifiers differential tests ran (tests/test_verifiers_compat.py)."""
    import sys

    mod = next((m for name, m in sys.modules.items() if name.endswith("test_verifiers_compat")), None)
    cases = getattr(mod, "CASES", None)
    if cases:
        per = ", ".join(f"{k} {v}" for k, v in cases.items())
        terminalreporter.write_line(f"verifiers 0.1.6.post0 differential tests: {sum(cases.values())} generated "
                                    f"cases ({per})")


@pytest.fixture(scope="session")
def qwen3_toy_dir(tmp_path_factory) -> str:
    """A random-init Qwen3-architecture model (hidden 64, 2 layers) with a Qwen3-style tokenizer and
    chat template, saved as a local directory (verity.models.toy)."""
    from verity.models.toy import save_toy

    return save_toy(tmp_path_factory.mktemp("qwen3_toy"), "qwen3")


@pytest.fixture(scope="session")
def llama3_toy_dir(tmp_path_factory) -> str:
    """The Llama-3 counterpart of ``qwen3_toy_dir``."""
    from verity.models.toy import save_toy

    return save_toy(tmp_path_factory.mktemp("llama3_toy"), "llama")
