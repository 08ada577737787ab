"""The loop of the trainers that step through a preference dataset in epochs (``verity dpo``, ``verity rm``):
the learner and schedule, resume, metrics.jsonl, manifest, progress line, checkpoints, the final model,
held-out evaluations and the curves (the run-folder rules and checkpoint format of ``verity sft``/``train``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from verity.train.checkpoint import resume_step, save_checkpoint, save_merged
from verity.train.config import RMConfig
from verity.train.metrics import MetricsLog, ProgressLine, write_manifest
from verity.train.rundir import locked_run


def epoch_learner(model: Any, n_units: int, config: RMConfig) -> tuple[Any, Any, int, int]:
    """(model with LoRA if asked, its :class:`LocalLearner`, steps per epoch, total steps) for a trainer that
    takes ``config.batch_size`` of ``n_units`` rows per step for ``config.epochs`` (at most ``max_steps``)."""
    from verity.models.loading import pick_dtype
    from verity.train.learner import LocalLearner, add_lora

    steps_per_epoch = math.ceil(n_units / config.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    if config.max_steps > 0:
        total_steps = min(total_steps, config.max_steps)
    torch.manual_seed(config.seed)
    model = add_lora(model, getattr(config, "lora_rank", 0), getattr(config, "lora_alpha", None))
    dev = next(model.parameters()).device.type
    learner = LocalLearner(model, config.lr, config.weight_decay, config.max_grad_norm, config.warmup_steps,
                           total_steps, config.lr_schedule, autocast_dtype=pick_dtype(config.dtype, dev),
                           decay_steps=config.decay_steps)
    return model, learner, steps_per_epoch, total_steps


class EpochTrainer:
    """The run of the trainers that step through a dataset in epochs (``verity sft``, ``verity dpo``):
    resume, metrics.jsonl, manifest, progress line, checkpoints every ``save_every`` steps, the final
    merged model and the curves. Subclasses set the attributes below and implement :meth:`train_step`."""

    kind = "dpo"
    resume_fields: tuple[str, ...] = ()
    cfg: Any
    run_dir: Path
    model: Any
    tokenizer: Any
    learner: Any
    total_steps: int

    def train_step(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    eval_units: Sequence[Any] = ()
    """Held-out rows :meth:`evaluate` reads (none: no evaluation)."""

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (``eval/...``), logged before the first step, every ``cfg.eval_every``
        steps and after the last."""
        return {}

    def start_run(self, log: MetricsLog, start: int) -> None:
        """Called once the run folder is ready, before the first step (``start`` > 0 on resume)."""
        if start == 0 and self.eval_units:
            log.log({"step": 0, **self.evaluate()})  # before any update

    def end_step(self, done: int, metrics: dict[str, Any]) -> None:
        """Called after step ``done``, before its metrics are logged (add to them here)."""
        every = getattr(self.cfg, "eval_every", 0)
        if self.eval_units and ((every and done % every == 0) or done == self.total_steps):
            metrics.update(self.evaluate())

    def train(self) -> dict[str, Any]:
        with locked_run(self.run_dir, self.cfg, self.resume_fields):
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        start = resume_step(self.run_dir, self.model, self.learner) if cfg.resume else 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir, resume_step=start if cfg.resume else None)  # a bad line stops us here
        write_manifest(self.run_dir, self.kind, cfg, getattr(cfg, "from_env", None), None)
        self.start_run(log, start)
        progress = ProgressLine(self.total_steps, start)
        last: dict[str, Any] = {}
        for step in range(start, self.total_steps):
            last = self.train_step(step)
            self.end_step(step + 1, last)
            log.log(last)
            progress.update(step + 1, {k: last[k] for k in ("loss", "rewards/margin", "lr") if k in last})
            if (step + 1) % cfg.save_every == 0 or step + 1 == self.total_steps:
                save_checkpoint(self.run_dir, step + 1, self.model, self.learner.state_dict(),
                                {"config": asdict(cfg)}, keep=cfg.keep_checkpoints, tokenizer=self.tokenizer)
        progress.close()
        self.save_final(self.run_dir / "final")
        try:
            from verity.train.plot import plot_run

            plot_run(self.run_dir)
        except Exception as e:
            print(f"warning: could not draw the loss curve: {e}")
        return last

    def save_final(self, out: Path) -> Path:
        """A plain HF model directory (LoRA merged) with the tokenizer and chat template."""
        return save_merged(self.model, self.tokenizer, out)
