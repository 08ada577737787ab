"""Preference training: DPO, IPO, hinge (SLiC) on pairs and KTO on labelled completions — the reference loop.

The reference log-probs are computed once, before the first step, with the model as loaded (full
fine-tune: the base itself, before any update; LoRA: the base with adapters disabled), so no second
copy of the model is held. Per step: the next ``batch_size`` rows of a seeded per-epoch shuffle →
micro-batches of chosen and rejected sequences through the learner → the preference loss
(:mod:`verity.algos.preference`) → AdamW → metrics, checkpoints (the format of ``verity train``,
so ``--resume`` and ``verity merge`` work the same) and, with held-out pairs, their pairwise
accuracy before, during and after training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from verity.algos.preference import PairLossType, dpo_loss, kto_loss
from verity.errors import ConfigError
from verity.train.batching import step_indices
from verity.train.config import DPOConfig
from verity.train.epochs import EpochTrainer, epoch_learner
from verity.train.pref_data import Row, TokenizedRow, tokenize_splits
from verity.train.rundir import preflight
from verity.train.sft_data import pad_batch
from verity.types import Batch, PreferencePair

# what --resume may not change: the model, the data, the loss and what the reference is
RESUME_FIELDS = ("model", "data", "loss", "lora_rank", "lora_alpha", "max_length")
_REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy")


class DPOTrainer(EpochTrainer):
    """``DPOTrainer(rows, model, config, eval_pairs).train()``; ``model`` is a name/path or (model, tokenizer)."""

    kind = "dpo"
    resume_fields = RESUME_FIELDS

    def __init__(self, rows: Sequence[Row], model: Any, config: DPOConfig,
                 eval_pairs: Sequence[PreferencePair] = ()):
        from verity.models.loading import load_model

        config.validate_run()
        self.cfg = config
        if isinstance(model, str):
            config.model = model
        self.run_dir = Path(config.output_dir or f"outputs/dpo/run--{time.strftime('%Y%m%d-%H%M%S')}")
        preflight(self.run_dir, config, RESUME_FIELDS)
        self.model, self.tokenizer = model if isinstance(model, tuple) else load_model(model, for_training=True)
        self.kto = config.loss == "kto"
        if not rows or isinstance(rows[0], PreferencePair) == self.kto:
            raise ConfigError(f"--loss {config.loss} needs " + ("prompt/completion/label rows" if self.kto
                                                                else "prompt/chosen/rejected pairs"))
        self.units, self.eval_units = tokenize_splits(self.tokenizer, rows, eval_pairs, config.max_length)
        self.model, self.learner, self.steps_per_epoch, self.total_steps = epoch_learner(self.model, len(self.units),
                                                                                         config)
        self.pad_id = self.tokenizer.pad_token_id
        # computed once, before any update: the reference never changes
        self.ref = self.sequence_logps(self.units, reference=True)  # [N, 2]
        self.eval_ref = self.sequence_logps(self.eval_units, reference=True)  # [M, 2]

    # ---- data -----------------------------------------------------------------------------
    def step_rows(self, step: int) -> list[int]:
        """Indices of the rows of ``step``, a pure function of (seed, step) so that resume is exact."""
        return step_indices(len(self.units), self.cfg.batch_size, self.cfg.seed, step)

    def _batch(self, units: Sequence[TokenizedRow]) -> Batch:
        """[2m] rows: the m chosen (KTO: completions) then the m rejected (KTO: mismatched completions)."""
        return pad_batch([u.chosen for u in units] + [u.rejected for u in units], self.pad_id)

    def sequence_logps(self, units: Sequence[TokenizedRow], reference: bool = False) -> torch.Tensor:
        """[n, 2] summed completion log-probs of (chosen, rejected), without gradient; ``reference``:
        of the base model (LoRA adapters disabled)."""
        out = []
        self.model.eval()
        disable = reference and self.cfg.lora_rank > 0
        with torch.no_grad():
            for s in range(0, len(units), self.cfg.micro_batch_size):
                mb = units[s:s + self.cfg.micro_batch_size]
                b = self._batch(mb)
                lp, _ = self.learner.completion_logprobs(b, disable_adapter=disable)  # [2m, C]
                seq = (lp * b.loss_mask.to(lp.device)).sum(-1).float().cpu()  # [2m]
                out.append(torch.stack([seq[:len(mb)], seq[len(mb):]], dim=-1))  # [m, 2]
        return torch.cat(out) if out else torch.zeros((0, 2))

    # ---- one step -------------------------------------------------------------------------
    def _loss_fn(self, idx: list[int], units: list[TokenizedRow]) -> Any:
        cfg, m = self.cfg, len(idx)
        ref = self.ref[idx]  # [m, 2]

        def fn(lp: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            seq = (lp * batch.loss_mask.to(lp.device)).sum(-1)  # [2m]
            r = ref.to(seq.device)
            if self.kto:
                good = torch.tensor([u.desirable for u in units], device=seq.device)  # [m]
                kl = (seq[m:] - r[:, 1]).detach().mean()  # mismatched pairs: the KL estimate z0
                loss, rew = kto_loss(seq[:m], r[:, 0], good, kl, cfg.beta, cfg.desirable_weight,
                                     cfg.undesirable_weight)
                return loss.sum(), {"rewards/chosen": (rew * good).sum(), "rewards/rejected": (rew * ~good).sum(),
                                    "n_desirable": good.sum(), "kl": kl * m}
            loss, rc, rr = dpo_loss(seq[:m], seq[m:], r[:, 0], r[:, 1], cfg.beta, cast(PairLossType, cfg.loss),
                                    cfg.label_smoothing)
            return loss.sum(), {"rewards/chosen": rc.sum(), "rewards/rejected": rr.sum(),
                                "rewards/margin": (rc - rr).sum(), "rewards/accuracy": (rc > rr).float().sum()}
        return fn

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        idx = self.step_rows(step)
        k, mbs = len(idx), self.cfg.micro_batch_size
        sums: dict[str, float] = {}
        for s in range(0, k, mbs):
            sub = idx[s:s + mbs]
            units = [self.units[i] for i in sub]
            m = self.learner.forward_backward(self._batch(units), self._loss_fn(sub, units), scale=1.0 / k)
            for key, v in m.items():
                sums[key] = sums.get(key, 0.0) + v
        opt = self.learner.optim_step()
        out: dict[str, Any] = {"step": step + 1, "loss": sums["loss"] / k}
        if self.kto:
            n_good = sums["n_desirable"]
            good = sums["rewards/chosen"] / n_good if n_good else 0.0
            bad = sums["rewards/rejected"] / (k - n_good) if k - n_good else 0.0
            out.update({"rewards/chosen": good, "rewards/rejected": bad, "rewards/margin": good - bad,
                        "kl": sums["kl"] / k})
        else:
            out.update({key: sums[key] / k for key in _REWARD_KEYS})
        return {**out, "epoch": (step + 1) / self.steps_per_epoch, **opt, "time/train": time.perf_counter() - t0}

    def evaluate(self) -> dict[str, float]:
        """Held-out pairwise accuracy (implicit reward margin > 0; a tie, as before training, counts half)
        and the mean margin beta·((pi_w − ref_w) − (pi_l − ref_l))."""
        if not self.eval_units:
            return {}
        pol = self.sequence_logps(self.eval_units)  # [M, 2]
        margin = self.cfg.beta * ((pol[:, 0] - self.eval_ref[:, 0]) - (pol[:, 1] - self.eval_ref[:, 1]))  # [M]
        tie = margin.abs() <= 1e-6
        acc = ((margin > 0) & ~tie).float() + 0.5 * tie.float()
        return {"eval/rewards/accuracy": float(acc.mean()), "eval/rewards/margin": float(margin.mean()),
                "eval/pairs": len(self.eval_units)}
