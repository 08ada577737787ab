"""Supervised fine-tuning: the reference loop (completion-only loss, optional packing, LoRA or full).

Per step: the next ``batch_size`` examples of a seeded per-epoch shuffle → micro-batches →
token-mean NLL over assistant tokens → AdamW with warm-up + cosine decay → metrics,
checkpoints (same format as RL, so ``--resume`` and ``verity merge`` work the same).
Under ``torchrun`` each rank takes a contiguous share of the step's examples, the token mean
is over the global batch's tokens and the gradients are summed (:mod:`verity.train.dist`);
rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from verity.algos.logprobs import selective_log_softmax
from verity.algos.losses import sft_loss
from verity.errors import ConfigError
from verity.train import dist
from verity.train.batching import epoch_order
from verity.train.checkpoint import resume_step, save_checkpoint, save_merged
from verity.train.config import SFTConfig, auto_or_int
from verity.train.metrics import MetricsLog, ProgressLine, write_manifest
from verity.train.rundir import is_writer, locked_run, preflight
from verity.train.sft_data import pack, packed_tensors, pad_batch, tokenize_conversation
from verity.train.watchdog import Watchdog
from verity.types import Message

# what --resume may not change: the model being trained and the data it is trained on
RESUME_FIELDS = ("model", "data", "from_env", "env_args", "lora_rank", "lora_alpha", "packing", "max_length")


class SFTTrainer:
    """``SFTTrainer(conversations, model, config).train()``; ``model`` is a name/path or (model, tokenizer)."""

    def __init__(self, conversations: Sequence[Sequence[Message]], model: Any, config: SFTConfig):
        from verity.models.loading import configure_chat, load_model, pick_dtype
        from verity.train.learner import LocalLearner, add_lora

        config.validate_run()
        config.micro_batch_size = auto_or_int(config.micro_batch_size, "micro_batch_size")
        self.world = dist.init_distributed()
        if config.batch_size % self.world:
            raise ConfigError(f"--batch-size {config.batch_size} does not split over {self.world} ranks "
                              "(torchrun --nproc_per_node): make it a multiple of the number of ranks")
        self.watchdog = Watchdog(config.watchdog_seconds, dist.rank())
        self.cfg = config
        if isinstance(model, str):
            config.model = model
        self.run_dir = Path(config.output_dir or f"outputs/sft/run--{time.strftime('%Y%m%d-%H%M%S')}")
        if is_writer():  # the other ranks follow rank 0's run folder
            preflight(self.run_dir, config, RESUME_FIELDS)
        self.model, self.tokenizer = model if isinstance(model, tuple) else load_model(model, for_training=True)
        configure_chat(self.tokenizer, config.chat_template, config.template_kwargs() or None)
        self.examples = [tokenize_conversation(self.tokenizer, c, config.max_length, f"conversation {k}")
                         for k, c in enumerate(conversations)]
        self.examples = [e for e in self.examples if any(e.loss_mask)]
        if not self.examples:
            raise ConfigError("no SFT example has assistant tokens within --max-length")
        self.units: list[Any] = pack(self.examples, config.max_length) if config.packing else list(self.examples)
        self.steps_per_epoch = math.ceil(len(self.units) / config.batch_size)
        self.total_steps = max(1, math.ceil(self.steps_per_epoch * config.epochs))
        if config.max_steps > 0:
            self.total_steps = min(self.total_steps, config.max_steps)
        torch.manual_seed(config.seed)
        self.model = add_lora(self.model, config.lora_rank, config.lora_alpha)
        dist.broadcast_params(p for p in self.model.parameters() if p.requires_grad)
        dev = next(self.model.parameters()).device.type
        self.learner = LocalLearner(self.model, config.lr, config.weight_decay, config.max_grad_norm,
                                    config.warmup_steps, self.total_steps, config.lr_schedule,
                                    autocast_dtype=pick_dtype(config.dtype, dev), decay_steps=config.decay_steps)
        self.pad_id = self.tokenizer.pad_token_id
        from verity.train.dryrun import sft_settings
        from verity.train.memory import ModelShape

        self.memory = sft_settings(config, ModelShape.from_config(self.model.config.to_dict()), dev,
                                   self.learner.autocast_dtype)
        self.learner.gradient_checkpointing = self.memory.checkpointing

    def step_units(self, step: int) -> list[Any]:
        """The data of ``step``, a pure function of (seed, step) so that resume is exact."""
        n, k = len(self.units), self.cfg.batch_size
        out = []
        for j in range(step * k, step * k + k):
            epoch, pos = divmod(j, n)
            out.append(self.units[epoch_order(n, self.cfg.seed, epoch)[pos]])
        return out

    def micro_loss(self, units: list[Any]) -> tuple[torch.Tensor, int]:
        """Summed NLL over loss tokens of a micro-batch, and the token count."""
        dev = self.learner.device
        with self.learner.recompute(mlp=False):  # layers recomputed under gradient checkpointing
            return self._micro_loss(units, dev)

    def _micro_loss(self, units: list[Any], dev: Any) -> tuple[torch.Tensor, int]:
        if self.cfg.packing:
            t = packed_tensors(units, self.pad_id)
            with self.learner.autocast():
                logits = self.model(input_ids=t["input_ids"].to(dev), attention_mask=t["attention_mask"].to(dev),
                                    position_ids=t["position_ids"].to(dev), use_cache=False).logits
            lp = selective_log_softmax(logits[:, :-1], t["input_ids"][:, 1:].to(dev))  # [B, L-1]
            mask = t["loss_mask"][:, 1:].to(dev)
        else:
            batch = pad_batch(units, self.pad_id)
            lp, _ = self.learner.completion_logprobs(batch, share=not self.learner.gradient_checkpointing)
            mask = batch.loss_mask.to(dev)
        n = int(mask.sum())
        return sft_loss(lp, mask) * n, n

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.model.train()
        units = self.step_units(step)
        lo, hi = dist.shard_range(len(units))  # this rank's share (all of it in one process)
        mine, k = units[lo:hi], self.memory.micro_batch
        mbs = [mine[i:i + k] for i in range(0, len(mine), k)]
        total = sum(sum(sum(e.loss_mask) for e in (u if isinstance(u, list) else [u])) for u in units)
        loss_sum = 0.0
        with self.watchdog.phase("training"):
            for mb in mbs:
                loss, _ = self.micro_loss(mb)
                (loss / max(total, 1)).backward()
                loss_sum += float(loss.detach())
        with self.watchdog.phase("collective"):
            [loss_sum] = dist.all_sum([loss_sum])
            opt = self.learner.optim_step()
        return {"step": step + 1, "loss": loss_sum / max(total, 1), "tokens": total,
                "epoch": (step + 1) / self.steps_per_epoch, **opt, "time/train": time.perf_counter() - t0}

    def train(self) -> dict[str, Any]:
        with locked_run(self.run_dir, self.cfg, RESUME_FIELDS):
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        log, progress = None, None
        with self.watchdog:
            with self.watchdog.phase("checkpoint"):
                start = resume_step(self.run_dir, self.model, self.learner) if cfg.resume else 0
            if is_writer():  # the other ranks compute their share of every step, rank 0 writes
                self.run_dir.mkdir(parents=True, exist_ok=True)
                log = MetricsLog(self.run_dir, resume_step=start if cfg.resume else None)  # a bad line stops us here
                write_manifest(self.run_dir, "sft", cfg, cfg.from_env, None, extra={"world_size": self.world})
                progress = ProgressLine(self.total_steps, start)
            last = self._steps(start, log, progress)
        if progress is None:
            return last
        progress.close()
        self.save_final(self.run_dir / "final")
        try:
            from verity.train.plot import plot_run

            plot_run(self.run_dir)
        except Exception as e:
            print(f"warning: could not draw the loss curve: {e}")
        return last

    def _steps(self, start: int, log: MetricsLog | None, progress: ProgressLine | None) -> dict[str, Any]:
        """The remaining steps; ``log``/``progress`` are None on the ranks that do not write."""
        cfg, last = self.cfg, {}
        for step in range(start, self.total_steps):
            self.watchdog.beat(step + 1)
            last = self.train_step(step)
            self.watchdog.beat(step + 1)
            if log is None or progress is None:
                continue
            log.log(last)
            progress.update(step + 1, {"loss": last["loss"], "lr": last["lr"]})
            if (step + 1) % cfg.save_every == 0 or step + 1 == self.total_steps:
                with self.watchdog.phase("checkpoint"):
                    save_checkpoint(self.run_dir, step + 1, self.model, self.learner.state_dict(),
                                    {"config": asdict(cfg)}, keep=cfg.keep_checkpoints, tokenizer=self.tokenizer)
        return last

    def save_final(self, out: Path) -> Path:
        """A plain HF model directory (LoRA merged) with the tokenizer and chat template."""
        return save_merged(self.model, self.tokenizer, out)
