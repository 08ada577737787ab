"""The decode loop reads nothing from the device between host checks, and samples what it sampled before.

Host syncs are counted at the ATen level (a ``TorchDispatchMode`` sees ``_local_scalar_dense``, which
``item``/``int``/``bool`` call, and the data-dependent ops ``nonzero``/``masked_select``/boolean
``index``) plus ``item``/``int``/``float``/``bool``/``index``/``tolist``/``cpu``/``numpy`` patched on
``torch.Tensor`` (on a CPU tensor they read memory without dispatching); each is attributed to the
model forward it happens after (0 = the prefill, whose logits give token 0; forward t gives token t).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.decode_cases import cases
from verity.models.loading import load_model
from verity.rollout.hf_sampler import HFSampler
from verity.types import SamplingArgs

GOLDEN = Path(__file__).parent / "data" / "decode_golden.json"


class SyncCounter(TorchDispatchMode):
    """Counts host-synchronising operations, per model forward (``step``; 0 = prefill)."""

    SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "unique", "_unique2"}

    def __init__(self) -> None:
        super().__init__()
        self.step = -1
        self.by_step: dict[int, list[str]] = {}

    def hit(self, what: str) -> None:
        self.by_step.setdefault(self.step, []).append(what)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        bool_index = name in ("index", "index_put_", "index_put") and any(
            t is not None and getattr(t, "dtype", None) == torch.bool for t in (args[1] if len(args) > 1 else ()))
        if name in self.SYNC_OPS or bool_index:
            self.hit(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def counted(monkeypatch):
    counter = SyncCounter()
    for meth in ("tolist", "cpu", "numpy", "item", "__int__", "__float__", "__bool__", "__index__"):
        orig = getattr(torch.Tensor, meth)

        def wrapped(self, *a, _orig=orig, _m=meth, **kw):
            counter.hit(_m)
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, meth, wrapped)
    return counter


def _sampler(model_dir: str, check_every: int | None) -> HFSampler:
    model, tok = load_model(model_dir, dtype="fp32")
    s = HFSampler(model, tok, batch_size=16, check_every=check_every)
    s.eos_ids = [10_000]  # never sampled: every row decodes all max_tokens (the steady state)
    return s


def _run(s: HFSampler, counter: SyncCounter, args: SamplingArgs, seeds=None) -> dict[int, list[str]]:
    def pre(*_):
        counter.step += 1

    h = s.model.register_forward_pre_hook(pre)
    prompts = [s.render([{"role": "user", "content": q}]) for q in ("hello there", "mask: Jane 555-0100", "x")] * 2
    try:
        with counter:
            s.generate_ids(prompts, args, seeds=seeds)
    finally:
        h.remove()
    return counter.by_step


@pytest.mark.parametrize("kind", ["shared_generator", "row_seeds", "greedy_top_logprobs"])
def test_no_host_sync_between_checks(tiny_model_dir, counted, kind):
    K, T = 8, 40
    s = _sampler(tiny_model_dir, check_every=K)
    args = {"shared_generator": SamplingArgs(max_tokens=T, temperature=0.9, top_p=0.8, seed=1),
            "row_seeds": SamplingArgs(max_tokens=T, temperature=1.0),
            "greedy_top_logprobs": SamplingArgs(max_tokens=T, temperature=0.0, top_logprobs=3)}[kind]
    seeds = list(range(6)) if kind == "row_seeds" else None
    by_step = _run(s, counted, args, seeds)
    # token t is sampled after forward t; the host check after token t (t+1 ≡ 0 mod K) runs before forward t+1
    assert counted.step == T - 1  # prefill + T-1 decode forwards: the counter saw every step
    # forward 0 is the prefill (its mask checks read the host once per batch)
    steady = {st: ops for st, ops in by_step.items() if 1 <= st < T - 1 and (st + 1) % K != 0}
    assert steady == {}, f"host syncs inside the decode loop: {steady}"
    checks = {st: ops for st, ops in by_step.items() if 0 <= st < T - 1 and (st + 1) % K == 0}
    assert all(len(ops) <= 1 for ops in checks.values()), checks  # one read of the live count, nothing else
    # per token in the steady state: 0; per generation: one read every K tokens
    assert sum(len(v) for v in checks.values()) <= T // K


def test_accelerator_attention_path_has_no_sync_between_checks(tiny_model_dir, counted, monkeypatch):
    """The decode attention used off-CPU (SDPA with a mask built without reading its values), run on the CPU:
    transformers' own SDPA mask would read ``padding_mask.all()`` at every step."""
    from verity.rollout import hf_sampler

    real = hf_sampler.decode_attention_for
    monkeypatch.setattr(hf_sampler, "decode_attention_for", lambda model, _dev: real(model, "cuda"))
    K, T = 8, 24
    s = _sampler(tiny_model_dir, check_every=K)
    by_step = _run(s, counted, SamplingArgs(max_tokens=T, temperature=1.0, seed=2))
    steady = {st: ops for st, ops in by_step.items() if 1 <= st < T - 1 and (st + 1) % K != 0}
    assert steady == {}, f"host syncs inside the decode loop: {steady}"
    assert s.model.config._attn_implementation != "verity_sdpa"  # restored after generation

    monkeypatch.setattr(hf_sampler, "decode_attention_for", lambda model, _dev: None)  # transformers' SDPA mask
    counted.step, counted.by_step = -1, {}
    args = SamplingArgs(max_tokens=T, temperature=1.0, seed=2)
    by_step = _run(_sampler(tiny_model_dir, check_every=K), counted, args)
    assert any(1 <= st < T - 1 and (st + 1) % K != 0 for st in by_step)  # the counter would see that sync


def test_counter_sees_syncs(tiny_model_dir, counted):
    """The same run checking the batch every token syncs at every step: the counter is not blind."""
    T = 12
    s = _sampler(tiny_model_dir, check_every=1)
    by_step = _run(s, counted, SamplingArgs(max_tokens=T, temperature=1.0, seed=0))
    assert all(by_step.get(st) for st in range(1, T - 1))


@pytest.mark.parametrize("check_every", [None, 5])
def test_same_tokens_as_the_loop_before_the_rewrite(tiny_model_dir, check_every):
    """tests/data/decode_golden.json: outputs of the decode loop at bd689d1 (host-side uniforms, a host
    check every token) for five settings: one shared generator (with top-k log-probs, with top-p),
    per-row seeds, the bf16 sampling copy, greedy; rows stop early (many stop ids) so compaction
    runs. Checking every token (the CPU default) and every 5 tokens both give the same tokens."""
    golden = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(cases(tiny_model_dir, check_every=check_every)))
    for name in golden:
        assert got[name] == golden[name], name
