"""GRPO-family RL in any verity environment: the reference loop.

One step: take ``groups_per_batch`` prompts → sample ``group_size`` completions each with
:meth:`Environment.rollout` (the same path as ``verity eval``) → rewards from the rubric →
group-relative advantages → clipped policy-gradient loss → AdamW step → metrics, plots,
evals and checkpoints. The sampler and the learner are separate objects that share the
model in-process; on a cluster they would be an inference server and a distributed learner.

Under ``torchrun`` (:mod:`verity.train.dist`) each rank generates and scores a contiguous
share of the step's prompt groups, rewards are gathered so advantages are those of the global
batch, every rank's loss is its share of the global-batch loss and the gradients are summed,
so P ranks take the same optimiser step as one process on the same global batch. Rank 0 alone
writes metrics, checkpoints and plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from verity.algos.advantages import compute_advantages
from verity.algos.losses import batch_share, mismatch_kl, policy_loss, truncated_is_weights
from verity.envs.base import Environment
from verity.errors import ConfigError
from verity.models.loading import configure_chat
from verity.train import dist
from verity.train.batching import make_batch, split_batch
from verity.train.checkpoint import resume_step, save_checkpoint
from verity.train.config import RLConfig
from verity.train.memory import MemorySettings
from verity.train.metrics import MetricsLog, ProgressLine, write_manifest
from verity.train.rollouts import rollout_groups, step_examples, step_sampling_args
from verity.train.rundir import is_writer, locked_run, preflight
from verity.train.watchdog import Watchdog
from verity.types import Batch, Example, Group, Rollout, RolloutBatch, SamplingArgs
from verity.utils import run_sync

# what --resume may not change: the model being trained and the task it is trained on
RESUME_FIELDS = ("model", "env", "env_args", "lora_rank", "lora_alpha")
# per-micro-batch metrics summed over ranks (each already weighted by its share of the global batch)
SHARED_METRICS = ("loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "entropy",
                  "mismatch_kl")


class TimedSampler:
    """Wraps a sampler to account generation time separately from scoring."""

    def __init__(self, inner: Any, watchdog: Watchdog | None = None):
        self.inner, self.name, self.seconds = inner, inner.name, 0.0
        self.batch_size = getattr(inner, "batch_size", None)
        self.watchdog = watchdog or Watchdog(0)

    async def generate(self, prompts: Any, args: SamplingArgs, tools: Any = None) -> Any:
        t0 = time.perf_counter()
        try:
            with self.watchdog.phase("generation"):
                if tools is None:
                    return await self.inner.generate(prompts, args)
                return await self.inner.generate(prompts, args, tools=tools)
        finally:
            self.seconds += time.perf_counter() - t0

    def generate_ids(self, prompt_ids: Any, args: SamplingArgs) -> Any:
        """Token-level sampling (multi-turn rollouts on the local model), timed the same way."""
        t0 = time.perf_counter()
        try:
            with self.watchdog.phase("generation"):
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

        self.world = _join_world(config, model)
        self.group_seeding = config.rollout_seeding == "group" or (config.rollout_seeding == "auto" and self.world > 1)
        self.watchdog = Watchdog(config.watchdog_seconds, dist.rank())

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
        if is_writer():  # the other ranks follow rank 0's run folder (which it may already be writing)
            preflight(self.run_dir, config, RESUME_FIELDS)
        self.model, self.tokenizer = self._load_model(model)
        from verity.models.loading import pick_dtype
        configure_chat(self.tokenizer, config.chat_template, config.template_kwargs() or None)
        from verity.train.learner import LocalLearner, add_lora

        dev = next(self.model.parameters()).device.type
        amp = pick_dtype("auto" if config.dtype == "auto" else config.dtype, dev)
        torch.manual_seed(config.seed)
        self.model = add_lora(self.model, config.lora_rank, config.lora_alpha)
        dist.broadcast_params(p for p in self.model.parameters() if p.requires_grad)
        self.learner = LocalLearner(self.model, lr=config.lr, weight_decay=config.weight_decay,
                                    max_grad_norm=config.max_grad_norm, warmup_steps=config.warmup_steps,
                                    total_steps=config.steps, autocast_dtype=amp)
        self.sampler = TimedSampler(self._make_sampler(str(model if isinstance(model, str) else "model"), amp),
                                    self.watchdog)
        self.memory = self._memory_settings(dev, amp)
        self.learner.gradient_checkpointing = self.memory.checkpointing
        self.sampler.batch_size = self.sampler.inner.batch_size = self.memory.decode_batch
        self.ray = None
        if config.rollout_workers:
            from verity.train.ray_workers import RayRollouts

            self.ray = RayRollouts(config, self.model)
        self.t_sync, self._synced_at = 0.0, -1
        self.ref_model = self._reference_model() if config.kl_beta > 0 else None
        self.step = 0

    def _memory_settings(self, device: str, amp: Any) -> MemorySettings:
        """``auto`` micro-batch, decode batch and checkpointing from the memory plan of this model
        (its config) and the environment's longest prompt among the first 64."""
        from verity.train.dryrun import prompt_tokens, rl_settings, token_counter
        from verity.train.memory import ModelShape

        shape = ModelShape.from_config(self.model.config.to_dict())
        plen = prompt_tokens([ex.prompt for ex in self.train_examples], token_counter(self.tokenizer))
        return rl_settings(self.cfg, shape, device, amp, plen)

    def _make_sampler(self, name: str, amp: Any) -> Any:
        if self.cfg.sampler == "server":
            from verity.rollout.server_sampler import ServerSampler

            return ServerSampler((self.cfg.sampler_url or "").split(","), self.tokenizer)
        from verity.rollout.hf_sampler import HFSampler

        return HFSampler(self.model, self.tokenizer, batch_size=self.cfg.batch_size, name=name, autocast_dtype=amp)

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
        return step_examples(self.train_examples, self.cfg, step)

    # ---- one step -------------------------------------------------------------------------
    def sampling_args(self, step: int) -> SamplingArgs:
        return step_sampling_args(self.cfg, step)

    def train_step(self, step: int) -> dict[str, Any]:
        """Sync the sampler's weights if due, roll out the prompts of ``step``, learn from them."""
        self.sync_weights(step)
        return self.learn(step, self.collect(step))

    def collect(self, step: int, sampler: TimedSampler | None = None) -> RolloutBatch:
        """This rank's share of the rollouts of data step ``step``, scored (``sampler`` defaults to the trainer's)."""
        G, sampler = self.cfg.group_size, sampler or self.sampler
        t0 = time.perf_counter()
        sampler.seconds = 0.0
        examples = self.batch_examples(step)
        lo, hi = dist.shard_range(len(examples))  # this rank's prompt groups (all of them in one process)
        if self.ray is not None:  # generation and scoring overlap in the actors: all counted as generation
            with self.watchdog.phase("generation and reward in Ray workers"):
                self.ray.publish()
                rollouts: list[Rollout] = self.ray.rollouts(step, len(examples))
            sampler.seconds = time.perf_counter() - t0
        else:
            with sampler.watchdog.phase("reward"):  # TimedSampler marks the generation inside it
                rollouts = run_sync(rollout_groups(self.env, sampler, self.cfg, step, examples[lo:hi], lo,
                                                   self.group_seeding))
        t_gen = sampler.seconds
        groups = tuple(Group(ex.id, tuple(rollouts[k * G:(k + 1) * G])) for k, ex in enumerate(examples[lo:hi]))
        return RolloutBatch(step=step, groups=groups, first=lo, t_generate=t_gen,
                            t_score=time.perf_counter() - t0 - t_gen)

    def learn(self, step: int, rb: RolloutBatch) -> dict[str, Any]:
        """Advantages over the global batch, the optimiser step(s), and the step's metrics line."""
        cfg, G = self.cfg, self.cfg.group_size
        groups, lo = list(rb.groups), rb.first
        rollouts = [r for g in groups for r in g.rollouts]
        with self.watchdog.phase("collective"):
            rewards = dist.all_gather_cat(torch.tensor([r.reward for r in rollouts]))  # [N*G], global batch
        adv = compute_advantages(rewards, G, cfg.advantage, cfg.scale_rewards).view(-1, G)[lo:lo + len(groups)].tolist()
        # groups with no signal are skipped, and so are failed generations
        train = [(r, a) for g, g_adv in zip(groups, adv, strict=True) if g.has_signal
                 for r, a in zip(g.rollouts, g_adv, strict=True) if r.error is None]
        t1 = time.perf_counter()
        with self.watchdog.phase("collective"):
            any_train = dist.all_sum([len(train)])[0] > 0
        with self.watchdog.phase("training"):
            train_metrics = self.optimize([r for r, _ in train], [a for _, a in train]) if any_train else {}
        t_train = time.perf_counter() - t1
        if self.world > 1:
            with self.watchdog.phase("collective"):
                groups = dist.all_gather_list(groups)
        return self.step_metrics(step, groups, train_metrics, rb.t_generate, rb.t_score, t_train)

    def optimize(self, rollouts: list[Rollout], advantages: list[float]) -> dict[str, float]:
        """``num_iterations`` passes of micro-batched forward/backward + one optimiser step each.

        Under torchrun the losses are normalised by the global batch's sequence and token counts
        and the optimiser step sums the ranks' gradients; a rank with no rollouts to train on still
        takes part (with zero gradients)."""
        cfg = self.cfg
        batch = make_batch(rollouts, advantages, self.tokenizer.pad_token_id, cfg.mask_truncated) if rollouts else None
        n_seq, n_tok = (int(v) for v in dist.all_sum([len(rollouts), batch.num_tokens if batch else 0]))
        micro = split_batch(batch, self.memory.micro_batch) if batch is not None else []
        if cfg.num_iterations > 1:  # the learner's log-probs before any update: the ratio's denominator
            with torch.no_grad():
                micro = [_with_old(mb, self.learner.completion_logprobs(mb)[0]) for mb in micro]
        refs = [self._ref_logprobs(mb) for mb in micro] if cfg.kl_beta > 0 else [None] * len(micro)
        sums: dict[str, float] = {}
        for _ in range(cfg.num_iterations):
            for mb, ref in zip(micro, refs, strict=False):
                # the loss is already the micro-batch's share; its per-token means are weighted alike
                w = batch_share(cfg.loss, mb.input_ids.shape[0], mb.num_tokens, n_seq, n_tok)
                m = self.learner.forward_backward(mb, self._loss_fn(ref, n_seq, n_tok))
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + (v if k == "loss" else v * w) / cfg.num_iterations
            if self.world > 1:
                sums.update(zip(SHARED_METRICS, dist.all_sum([sums.get(k, 0.0) for k in SHARED_METRICS]), strict=True))
            for k, v in self.learner.optim_step().items():
                sums[k] = v
        return sums

    def _loss_fn(self, ref: torch.Tensor | None, batch_sequences: int, batch_tokens: int) -> Any:
        cfg = self.cfg

        def fn(lp: torch.Tensor, mb: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            old = lp.detach() if mb.old_logprobs is None else mb.old_logprobs.to(lp.device)
            mask = mb.loss_mask.to(lp.device)
            slp = mb.sampler_logprobs.to(lp.device)
            # off-policy: the tokens come from an older policy; reweight them towards the learner's
            w = truncated_is_weights(old, slp, cfg.tis_cap) if cfg.max_off_policy_steps else None
            loss, metrics = policy_loss(lp, old, mb.advantages.to(lp.device), mask,
                                        loss_type=cfg.loss, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                                        max_completion_length=cfg.max_tokens, ref_logprobs=ref, kl_beta=cfg.kl_beta,
                                        batch_sequences=batch_sequences, batch_tokens=batch_tokens, is_weights=w)
            # the learner before this step's update (old) against the sampler that drew the tokens
            metrics["mismatch_kl"] = mismatch_kl(old, slp, mask)
            return loss, metrics
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
        for k in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "lr", "mismatch_kl"):
            m[k] = tm.get(k, 0.0)
        m.update({"completion_len/mean": sum(lengths) / len(lengths), "completion_len/max": max(lengths),
                  "frac_truncated": sum(r.truncated for r in rollouts) / len(rollouts),
                  "frac_zero_std": float(flat.float().mean()), "tokens": sum(lengths),
                  "turns/mean": sum(len(r.turns) for r in rollouts) / len(rollouts),
                  "time/generate": t_gen, "time/score": t_score, "time/train": t_train,
                  # the loop is synchronous: the learner waits for all of the step's rollouts; the
                  # in-process sampler reads the learner's own parameters, so no weights are sent
                  "time/wait_for_rollouts": t_gen + t_score, "time/wait_for_weights": self.t_sync})
        return m

    def sync_weights(self, step: int) -> None:
        """``--sampler server``: every ``--sync-every`` steps rank 0 writes the adapter to
        ``RUN/sync/step_N`` and the servers load it (vLLM's runtime LoRA endpoints); the other ranks
        wait. ``self.t_sync`` is the time it took (0 in-process: the sampler reads the learner's own
        parameters, so no weights are sent)."""
        self.t_sync = 0.0
        if self.cfg.sampler != "server" or (self._synced_at >= 0 and step - self._synced_at < self.cfg.sync_every):
            return
        t0 = time.perf_counter()
        with self.watchdog.phase("weight sync"):
            if is_writer():
                import shutil

                root = self.run_dir / "sync"
                path, tmp = root / f"step_{step:06d}", root / f".tmp_step_{step:06d}"
                shutil.rmtree(tmp, ignore_errors=True)
                self.model.save_pretrained(tmp, safe_serialization=True)
                tmp.rename(path)
                self.sampler.load_adapter("verity-policy", str(path.resolve()))
                for old in root.glob("step_*"):  # the servers hold the weights now
                    if old != path:
                        shutil.rmtree(old, ignore_errors=True)
            dist.barrier()
            if not is_writer():
                self.sampler.inner.model = "verity-policy"
        self._synced_at = step
        self.t_sync = time.perf_counter() - t0

    # ---- the loop -------------------------------------------------------------------------
    def train(self, on_step: Callable[[dict[str, Any]], None] | None = None,
              progress: bool = True) -> dict[str, Any]:
        """Run the remaining steps. ``on_step(metrics)`` is called after each step with that step's
        metrics line (as written to metrics.jsonl), e.g. to draw a live curve in a notebook;
        ``progress=False`` silences the console progress line."""
        with locked_run(self.run_dir, self.cfg, RESUME_FIELDS):
            return self._train(on_step, progress)

    def _train(self, on_step: Callable[[dict[str, Any]], None] | None, progress: bool) -> dict[str, Any]:
        cfg, writer = self.cfg, is_writer()
        with self.watchdog:
            with self.watchdog.phase("checkpoint"):
                start = self._maybe_resume()
            log = None
            if writer:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                log = MetricsLog(self.run_dir, resume_step=start if cfg.resume else None)  # a bad line stops us here
                write_manifest(self.run_dir, "rl", cfg, self.env.env_id, self.env.env_args,
                               extra={"world_size": self.world})
            line = ProgressLine(cfg.steps, start) if progress and writer else None
            last: dict[str, Any] = {}
            producer = self._producer(start)
            for step in range(start, cfg.steps):
                self.watchdog.beat(step + 1)  # the clock runs from the start of each step
                last = self.train_step(step) if producer is None else self._off_policy_step(step, start, producer)
                self.watchdog.beat(step + 1)  # and again for its eval / checkpoint / plot
                if writer and self._eval_due(step + 1):
                    with self.watchdog.phase("eval"):
                        last.update(self.evaluate())
                if log:
                    log.log(last)
                if line:
                    line.update(step + 1, {"reward": last["reward/mean"], "loss": last["loss"]})
                if on_step:
                    on_step(dict(last))
                if writer and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
                    with self.watchdog.phase("checkpoint"):
                        self.save(step + 1)
                    with self.watchdog.phase("plot"):
                        self._plot()
            if producer is not None:
                producer.stop()
            if self.ray is not None:
                self.ray.close()
            if line:
                line.close()
        self.step = cfg.steps
        return last

    def _producer(self, start: int) -> Any:
        if not self.cfg.max_off_policy_steps:
            return None
        if self.world > 1:
            raise ConfigError("--max-off-policy-steps runs in one process (not under torchrun) for now")
        from verity.train.offpolicy import RolloutProducer

        return RolloutProducer(self, start, self.cfg.max_off_policy_steps).start()

    def _off_policy_step(self, step: int, start: int, producer: Any) -> dict[str, Any]:
        """Train on the next batch the producer thread generated ahead (at most S steps stale)."""
        version = step - start  # optimiser steps since the producer's copy was made
        with self.watchdog.phase("waiting for rollouts (generation/reward in the producer thread)"):
            rb, waited = producer.next(version)
        m = self.learn(step, rb)
        producer.publish(version + 1)
        m.update({"time/wait_for_rollouts": waited, "time/wait_for_weights": rb.t_weights,
                  "off_policy/staleness": version - rb.version, "off_policy/dropped": producer.dropped,
                  "off_policy/data_step": rb.step + 1})
        return m

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


def _join_world(config: RLConfig, model: Any) -> int:
    """Join the torchrun process group if there is one; refuse what does not split over its ranks."""
    world = dist.init_distributed()
    if config.groups_per_batch % world:
        raise ConfigError(f"--groups-per-batch {config.groups_per_batch} does not split over {world} ranks "
                          "(torchrun --nproc_per_node): make it a multiple of the number of ranks")
    if config.rollout_seeding == "batch" and world > 1:
        raise ConfigError("--rollout-seeding batch ties rollouts to one process's batch; under torchrun "
                          "use group (or auto)")
    if config.rollout_workers and world > 1:
        raise ConfigError("--rollout-workers runs in one trainer process (not under torchrun) for now")
    if config.rollout_workers and not isinstance(model, str):
        raise ConfigError("--rollout-workers loads the model in each worker: give it as a name or path")
    return world


def _with_old(mb: Batch, old: torch.Tensor) -> Batch:
    from dataclasses import replace

    return replace(mb, old_logprobs=old.detach().float().cpu())
