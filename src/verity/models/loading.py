"""Loading Hugging Face causal LMs and tokenizers by name, path or hub id.

``verity-tiny`` resolves to the starter model shipped inside the package. A local directory
is loaded as is; anything else is treated as a hub id (which needs network or the HF cache).
``dtype="auto"`` picks bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with
AVX512-BF16/AMX) and fp32 elsewhere.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verity.errors import ConfigError, VerityError

STARTER = "verity-tiny"


def starter_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / STARTER


def resolve_model(name: str) -> str:
    """Map a model argument to what ``from_pretrained`` takes (local path or hub id)."""
    if name == STARTER:
        p = starter_path()
        if not (p / "config.json").is_file():
            raise VerityError(f"{STARTER} is not built in this checkout ({p}); run `python scripts/build_starter.py`")
        return str(p)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise VerityError(f"-m {name}: directory has no config.json (not a Hugging Face model)")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise VerityError(f"-m {name}: no such model directory")
    return name


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """torch dtype for ``dtype`` in {auto, bf16, fp16, fp32}."""
    import torch

    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if dtype not in table:
        raise ConfigError(f"--dtype {dtype}: expected auto, bf16, fp16 or fp32")
    return table[dtype]


def _hub_error(name: str, e: Exception) -> VerityError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = " (HF_HUB_OFFLINE=1 is set)" if offline else " (is the network reachable?)"
    return VerityError(
        f"cannot load model {name!r}: not a local directory and not loadable from the Hub{hint}: {type(e).__name__}")


def quiet_transformers() -> None:
    """Silence transformers' progress bars and advisory warnings (verity prints its own progress)."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.nn.modules.module")


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise _hub_error(name, e) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def configure_chat(tokenizer: Any, chat_template: str | None = None,
                   template_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Apply ``--chat-template FILE`` and ``--chat-template-kwargs`` to ``tokenizer`` (returned).

    A tokenizer without a chat template keeps none: rendering a chat with it is then a one-line
    error naming the fix (:func:`verity.models.chat.require_template`), never a silent fallback.
    """
    from verity.models.chat import set_template_kwargs

    if chat_template is not None:
        p = Path(chat_template)
        if not p.is_file():
            raise ConfigError(f"--chat-template {chat_template}: file not found")
        tokenizer.chat_template = p.read_text(encoding="utf-8")
    if template_kwargs is not None:
        set_template_kwargs(tokenizer, template_kwargs)
    return tokenizer


def load_model(name: str, dtype: str = "auto", device: str = "auto", for_training: bool = False,
               scalar_head: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer). Training keeps fp32 master weights (bf16 autocast is applied by the learner).
    ``scalar_head``: the LM's body with one scalar output read at the last token (a reward model;
    the head is new unless ``name`` is already such a model)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model(name)
    quiet_transformers()
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if for_training:  # fp32 master weights on every device; the learner applies bf16 autocast
        import torch

        torch_dtype = torch.float32
    from safetensors import SafetensorError

    try:
        if scalar_head:
            model: Any = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype, num_labels=1)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except SafetensorError as e:
        raise VerityError(f"-m {name}: its weights (*.safetensors) are truncated or corrupt: {e}") from None
    except OSError as e:
        raise _hub_error(name, e) from None
    model.to(dev)
    model.eval()
    tok = load_tokenizer(name)
    if scalar_head and model.config.pad_token_id is None:  # the head reads the last token that is not padding
        model.config.pad_token_id = tok.pad_token_id
    return model, tok
