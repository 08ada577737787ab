"""Reward models: a scalar head on the LM trained on preference pairs with the Bradley-Terry loss.

The model is the LM's body with one linear output read at the last token of prompt + completion
(``AutoModelForSequenceClassification`` with one label; the head starts random). Per step: the next
``batch_size`` pairs of a seeded per-epoch shuffle → scores of chosen and rejected → -log sigma(s_w - s_l)
(:func:`verity.algos.preference.bradley_terry_loss`) → AdamW, on the loop ``verity sft`` and
``verity dpo`` share (resume, checkpoints, metrics, curves). With held-out pairs, their pairwise
accuracy is logged before, during and after training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from verity.algos.preference import bradley_terry_loss
from verity.train.config import RMConfig
from verity.train.epochs import EpochTrainer, epoch_learner
from verity.train.pref_data import TokenizedRow, tokenize_splits
from verity.train.rundir import preflight
from verity.train.sft_data import SFTExample
from verity.types import PreferencePair

RESUME_FIELDS = ("model", "data", "max_length")


def right_padded(examples: Sequence[SFTExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [n, L] with each sequence first, padding after it."""
    L = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), L), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        attn[i, :len(e.input_ids)] = 1
    return ids, attn


class RewardModelTrainer(EpochTrainer):
    """``RewardModelTrainer(pairs, model, config, eval_pairs).train()``; ``model`` is a name/path or
    a (scalar-head model, tokenizer) pair."""

    kind = "rm"
    resume_fields = RESUME_FIELDS

    def __init__(self, pairs: Sequence[PreferencePair], model: Any, config: RMConfig,
                 eval_pairs: Sequence[PreferencePair] = ()):
        from verity.models.loading import load_model

        config.validate_run()
        self.cfg = config
        if isinstance(model, str):
            config.model = model
        self.run_dir = Path(config.output_dir or f"outputs/rm/run--{time.strftime('%Y%m%d-%H%M%S')}")
        preflight(self.run_dir, config, RESUME_FIELDS)
        torch.manual_seed(config.seed)  # the new head's initial weights are a function of the seed
        self.model, self.tokenizer = model if isinstance(model, tuple) else \
            load_model(model, for_training=True, scalar_head=True)
        self.units, self.eval_units = tokenize_splits(self.tokenizer, pairs, eval_pairs, config.max_length)
        self.model, self.learner, self.steps_per_epoch, self.total_steps = epoch_learner(self.model, len(self.units),
                                                                                         config)
        self.pad_id = self.tokenizer.pad_token_id

    def scores(self, examples: Sequence[SFTExample]) -> torch.Tensor:
        """[n] scalar scores of whole conversations (with gradient when the caller allows it)."""
        ids, attn = right_padded(examples, self.pad_id)
        with self.learner.autocast():
            out = self.model(input_ids=ids.to(self.learner.device), attention_mask=attn.to(self.learner.device))
        return out.logits[:, 0].float()  # [n]

    def pair_scores(self, units: Sequence[TokenizedRow]) -> torch.Tensor:
        """[n, 2] scores of (chosen, rejected), without gradient."""
        self.model.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(units), self.cfg.micro_batch_size):
                mb = units[s:s + self.cfg.micro_batch_size]
                sc = self.scores([u.chosen for u in mb] + [u.rejected for u in mb]).cpu()  # [2m]
                out.append(torch.stack([sc[:len(mb)], sc[len(mb):]], dim=-1))  # [m, 2]
        return torch.cat(out) if out else torch.zeros((0, 2))

    def train_step(self, step: int) -> dict[str, Any]:
        from verity.train.batching import step_indices

        t0 = time.perf_counter()
        self.model.train()
        idx = step_indices(len(self.units), self.cfg.batch_size, self.cfg.seed, step)
        k, mbs = len(idx), self.cfg.micro_batch_size
        loss_sum = margin_sum = right = 0.0
        for s in range(0, k, mbs):
            mb = [self.units[i] for i in idx[s:s + mbs]]
            sc = self.scores([u.chosen for u in mb] + [u.rejected for u in mb])  # [2m]
            sw, sl = sc[:len(mb)], sc[len(mb):]  # [m], [m]
            loss = bradley_terry_loss(sw, sl).sum()
            (loss / k).backward()
            loss_sum += float(loss.detach())
            margin_sum += float((sw - sl).detach().sum())
            right += float((sw > sl).float().sum())
        opt = self.learner.optim_step()
        return {"step": step + 1, "loss": loss_sum / k, "rewards/margin": margin_sum / k, "rewards/accuracy": right / k,
                "epoch": (step + 1) / self.steps_per_epoch, **opt, "time/train": time.perf_counter() - t0}

    def evaluate(self) -> dict[str, float]:
        """Held-out pairwise accuracy (chosen scored higher; a tie counts half) and mean score margin."""
        if not self.eval_units:
            return {}
        sc = self.pair_scores(self.eval_units)  # [M, 2]
        margin = sc[:, 0] - sc[:, 1]  # [M]
        acc = (margin > 0).float() + 0.5 * (margin == 0).float()
        return {"eval/rewards/accuracy": float(acc.mean()), "eval/rewards/margin": float(margin.mean()),
                "eval/pairs": len(self.eval_units)}
