"""GRPO-family RL in any verity environment: the reference loop.

One step: take ``groups_per_batch`` prompts → sample ``group_size`` completions each with
:meth:`Environment.rollout` (the same path as ``verity eval``) → rewards from the rubric →
group-relative advantages → clipped policy-gradient loss → AdamW step → metrics, plots,
evals and checkpoints. The sampler and the learner are separate objects that share the
model in-process; on a cluster they would be an inference server and a distributed learner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from verity.algos.advantages import compute_advantages
from verity.algos.losses import batch_share, policy_loss
from verity.envs.base import Environment
from verity.errors import ConfigError
from verity.train.batching import epoch_order, make_batch, split_batch
from verity.train.checkpoint import resume_step, save_checkpoint
from verity.train.config import RLConfig
from verity.train.memory import MemorySettings
from verity.train.metrics import MetricsLog, ProgressLine, write_manifest
from verity.train.rundir import locked_run, preflight
from verity.types import Batch, Example, Group, Rollout, SamplingArgs
from verity.utils import run_sync

# what --resume may not change: the model being trained and the task it is trained on
RESUME_FIELDS = ("model", "env", "env_args", "lora_rank", "lora_alpha")


class TimedSampler:
    """Wraps a sampler to account generation time separately from scoring."""

    def __init__(self, inner: Any):
        self.inner, self.name, self.seconds = inner, inner.name, 0.0
        self.batch_size = getattr(inner, "batch_size", None)

    async def generate(self, prompts: Any, args: SamplingArgs, tools: Any = None) -> Any:
        t0 = time.perf_counter()
        try:
            if tools is None:
                return await self.inner.generate(prompts, args)
            return await self.inner.generate(prompts, args, tools=tools)
        finally:
            self.seconds += time.perf_counter() - t0

    def generate_ids(self, prompt_ids: Any, args: SamplingArgs) -> Any:
        """Token-level sampling (multi-turn rollouts on the local model), timed the same way."""
        t0 = time.perf_counter()
        try:
            return self.inner.generate_ids(prompt_ids, args)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:  # tokenizer, model, render, ... of the inner sampler
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class RLTrainer:
    """``RLTrainer(env, model, config).train()``; ``model`` is a name/path or a (model, tokenizer) pair."""

    def __init__(self, env: Environment, model: Any, config: RLConfig):
        config.validate()
        from verity.utils import return_freed_memory

        return_freed_memory()  # resident memory follows the live tensors, not the largest step so far
        if isinstance(model, str):
            config.model = model  # the manifest records the model actually trained
        self.env, self.cfg = env, config
        env.require_rubric()
        self.train_examples = env.get_examples("train")
        if len(self.train_examples) < config.groups_per_batch:
            raise ConfigError(
                f"--groups-per-batch {config.groups_per_batch} does not fit: environment {env.env_id!r} has "
                f"{len(self.train_examples)} training examples")
        self.run_dir = Path(config.output_dir or f"outputs/runs/{env.env_id}--{time.strftime('%Y%m%d-%H%M%S')}")
        preflight(self.run_dir, config, RESUME_FIELDS)
        self.model, self.tokenizer = self._load_model(model)
        from verity.models.loading import pick_dtype
        from verity.rollout.hf_sampler import HFSampler
        from verity.train.learner import LocalLearner, add_lora

        dev = next(self.model.parameters()).device.type
        amp = pick_dtype("auto" if config.dtype == "auto" else config.dtype, dev)
        torch.manual_seed(config.seed)
        self.model = add_lora(self.model, config.lora_rank, config.lora_alpha)
        self.learner = LocalLearner(self.model, lr=config.lr, weight_decay=config.weight_decay,
                                    max_grad_norm=config.max_grad_norm, warmup_steps=config.warmup_steps,
                                    total_steps=config.steps, autocast_dtype=amp)
        self.sampler = TimedSampler(HFSampler(self.model, self.tokenizer, batch_size=config.batch_size,
                                              name=str(model if isinstance(model, str) else "model"),
                                              autocast_dtype=amp))
        self.memory = self._memory_settings(dev, amp)
        self.learner.gradient_checkpointing = self.memory.checkpointing
        self.sampler.batch_size = self.sampler.inner.batch_size = self.memory.decode_batch
        self.ref_model = self._reference_model() if config.kl_beta > 0 else None
        self.step = 0

    def _memory_settings(self, device: str, amp: Any) -> MemorySettings:
        """``auto`` micro-batch, decode batch and checkpointing from the memory plan of this model
        (its config) and the environment's longest prompt among the first 64."""
        from verity.train.dryrun import prompt_tokens, rl_settings
        from verity.train.memory import ModelShape

        shape = ModelShape.from_config(self.model.config.to_dict())
        plen = prompt_tokens([ex.prompt for ex in self.train_examples], self.sampler.render)
        return rl_settings(self.cfg, shape, device, amp, plen)

    def _load_model(self, model: Any) -> tuple[Any, Any]:
        if isinstance(model, tuple):
            return model
        from verity.models.loading import load_model

        return load_model(model, for_training=True)

    def _reference_model(self) -> Any:
        if self.cfg.lora_rank > 0:
            return None  # LoRA: the reference is the base model with adapters disabled
        import copy

        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    # ---- data ---------------------------------------------------------------------------
    def batch_examples(self, step: int) -> list[Example]:
        """The prompts of ``step``: a deterministic function of (seed, step), so resume is exact."""
        n, k = len(self.train_examples), self.cfg.groups_per_batch
        out = []
        for j in range(step * k, step * k + k):
            epoch, pos = divmod(j, n)
            out.append(self.train_examples[epoch_order(n, self.cfg.seed, epoch)[pos]])
        return out

    # ---- one step -------------------------------------------------------------------------
    def sampling_args(self, step: int) -> SamplingArgs:
        return SamplingArgs(max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
                            top_p=self.cfg.top_p, seed=self.cfg.seed * 7919 + step)

    def train_step(self, step: int) -> dict[str, Any]:
        cfg, G = self.cfg, self.cfg.group_size
        t0 = time.perf_counter()
        self.sampler.seconds = 0.0
        examples = self.batch_examples(step)
        jobs = [(ex, i) for ex in examples for i in range(G)]
        rollouts: list[Rollout] = run_sync(self.env.rollout_batch(self.sampler, jobs, self.sampling_args(step)))
        t_gen = self.sampler.seconds
        t_score = time.perf_counter() - t0 - t_gen

        groups = [Group(ex.id, tuple(rollouts[k * G:(k + 1) * G])) for k, ex in enumerate(examples)]
        rewards = torch.tensor([r.reward for r in rollouts])  # [N*G]
        adv = compute_advantages(rewards, G, cfg.advantage, cfg.scale_rewards).view(-1, G).tolist()  # [N][G]
        # groups with no signal are skipped, and so are failed generations
        train = [(r, a) for g, g_adv in zip(groups, adv, strict=True) if g.has_signal
                 for r, a in zip(g.rollouts, g_adv, strict=True) if r.error is None]
        t1 = time.perf_counter()
        train_metrics = self.optimize([r for r, _ in train], [a for _, a in train]) if train else {}
        t_train = time.perf_counter() - t1
        return self.step_metrics(step, groups, train_metrics, t_gen, t_score, t_train)

    def optimize(self, rollouts: list[Rollout], advantages: list[float]) -> dict[str, float]:
        """``num_iterations`` passes of micro-batched forward/backward + one optimiser step each."""
        cfg = self.cfg
        batch = make_batch(rollouts, advantages, self.tokenizer.pad_token_id, cfg.mask_truncated)
        micro = split_batch(batch, self.memory.micro_batch)
        if cfg.num_iterations > 1:  # the learner's log-probs before any update: the ratio's denominator
            with torch.no_grad():
                micro = [_with_old(mb, self.learner.completion_logprobs(mb)[0]) for mb in micro]
        refs = [self._ref_logprobs(mb) for mb in micro] if cfg.kl_beta > 0 else [None] * len(micro)
        sums: dict[str, float] = {}
        for _ in range(cfg.num_iterations):
            for mb, ref in zip(micro, refs, strict=False):
                # the loss is already the micro-batch's share; its per-token means are weighted alike
                w = batch_share(cfg.loss, mb.input_ids.shape[0], mb.num_tokens, len(rollouts), batch.num_tokens)
                m = self.learner.forward_backward(mb, self._loss_fn(ref, len(rollouts), batch.num_tokens))
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + (v if k == "loss" else v * w) / cfg.num_iterations
            for k, v in self.learner.optim_step().items():
                sums[k] = v
        return sums

    def _loss_fn(self, ref: torch.Tensor | None, batch_sequences: int, batch_tokens: int) -> Any:
        cfg = self.cfg

        def fn(lp: torch.Tensor, mb: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            old = lp.detach() if mb.old_logprobs is None else mb.old_logprobs.to(lp.device)
            return policy_loss(lp, old, mb.advantages.to(lp.device), mb.loss_mask.to(lp.device),
                               loss_type=cfg.loss, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                               max_completion_length=cfg.max_tokens, ref_logprobs=ref, kl_beta=cfg.kl_beta,
                               batch_sequences=batch_sequences, batch_tokens=batch_tokens)
        return fn

    def _ref_logprobs(self, mb: Batch) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is None:
                return self.learner.completion_logprobs(mb, disable_adapter=True)[0]
            saved = self.learner.model
            self.learner.model = self.ref_model
            try:
                return self.learner.completion_logprobs(mb)[0]
            finally:
                self.learner.model = saved

    def step_metrics(self, step: int, groups: list[Group], tm: dict[str, float],
                     t_gen: float, t_score: float, t_train: float) -> dict[str, Any]:
        rollouts = [r for g in groups for r in g.rollouts]
        flat = torch.tensor([not g.has_signal for g in groups])
        rewards = torch.tensor([r.reward for r in rollouts])
        lengths = [r.num_completion_tokens for r in rollouts]
        m: dict[str, Any] = {"step": step + 1, "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std())}
        for name in self.env.require_rubric().func_names:
            m[f"reward/{name}"] = sum(r.scores.get(name, 0.0) for r in rollouts) / len(rollouts)
        m["reward/errors"] = sum(len(r.reward_errors) for r in rollouts)
        for k in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "lr"):
            m[k] = tm.get(k, 0.0)
        m.update({"completion_len/mean": sum(lengths) / len(lengths), "completion_len/max": max(lengths),
                  "frac_truncated": sum(r.truncated for r in rollouts) / len(rollouts),
                  "frac_zero_std": float(flat.float().mean()), "tokens": sum(lengths),
                  "turns/mean": sum(len(r.turns) for r in rollouts) / len(rollouts),
                  "time/generate": t_gen, "time/score": t_score, "time/train": t_train})
        return m

    # ---- the loop -------------------------------------------------------------------------
    def train(self, on_step: Callable[[dict[str, Any]], None] | None = None,
              progress: bool = True) -> dict[str, Any]:
        """Run the remaining steps. ``on_step(metrics)`` is called after each step with that step's
        metrics line (as written to metrics.jsonl), e.g. to draw a live curve in a notebook;
        ``progress=False`` silences the console progress line."""
        with locked_run(self.run_dir, self.cfg, RESUME_FIELDS):
            return self._train(on_step, progress)

    def _train(self, on_step: Callable[[dict[str, Any]], None] | None, progress: bool) -> dict[str, Any]:
        cfg = self.cfg
        start = self._maybe_resume()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir, resume_step=start if cfg.resume else None)  # a bad line stops us here
        write_manifest(self.run_dir, "rl", cfg, self.env.env_id, self.env.env_args)
        line = ProgressLine(cfg.steps, start) if progress else None
        last: dict[str, Any] = {}
        for step in range(start, cfg.steps):
            last = self.train_step(step)
            if self._eval_due(step + 1):
                last.update(self.evaluate())
            log.log(last)
            if line:
                line.update(step + 1, {"reward": last["reward/mean"], "loss": last["loss"]})
            if on_step:
                on_step(dict(last))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                self.save(step + 1)
                self._plot()
        if line:
            line.close()
        self.step = cfg.steps
        return last

    def _eval_due(self, step: int) -> bool:
        if self.cfg.eval_examples <= 0:
            return False
        return (self.cfg.eval_every > 0 and step % self.cfg.eval_every == 0) or step == self.cfg.steps

    def evaluate(self, num_examples: int | None = None) -> dict[str, float]:
        """Held-out eval (one rollout per example) with the current policy: ``eval/...`` metrics."""
        from verity.eval.evaluate import evaluate

        n = num_examples or self.cfg.eval_examples
        args = SamplingArgs(max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        res = run_sync(evaluate(self.env, self.sampler, n, 1, args, seed=self.cfg.seed + 12345))
        return {f"eval/{'reward/mean' if k == 'reward' else 'reward/' + k}": v for k, v in res.metrics.items()}

    def save(self, step: int) -> Path:
        return save_checkpoint(self.run_dir, step, self.model, self.learner.state_dict(),
                               {"config": asdict(self.cfg)}, keep=self.cfg.keep_checkpoints,
                               tokenizer=self.tokenizer)

    def _maybe_resume(self) -> int:
        if not self.cfg.resume:
            return 0
        return resume_step(self.run_dir, self.model, self.learner)

    def _plot(self) -> None:
        try:
            from verity.train.plot import plot_run

            plot_run(self.run_dir)
        except Exception as e:  # a plot must never kill a training run
            print(f"warning: could not draw the reward curve: {e}")


def _with_old(mb: Batch, old: torch.Tensor) -> Batch:
    from dataclasses import replace

    return replace(mb, old_logprobs=old.detach().float().cpu())
