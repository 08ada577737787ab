"""Typed configuration of ``verity train``, ``sft``, ``dpo`` and ``prefs``; CLI flags derive from these fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from verity.algos.advantages import Estimator, Scale
from verity.algos.losses import LossType
from verity.algos.preference import PrefLossType
from verity.config import ChatTemplateFlags, check_choices, flag, parse_env_args
from verity.errors import ConfigError
from verity.eval.config import SAMPLING_FLAGS, EvalFlags
from verity.types import DType, TrainDType, check_sampling

#: How RL rollouts are seeded (see ``RLConfig.rollout_seeding``).
RolloutSeeding = Literal["auto", "batch", "group"]
#: Where RL generation runs (see ``RLConfig.sampler``).
SamplerKind = Literal["local", "server"]
#: Learning-rate schedule after warm-up (see :func:`verity.train.learner.lr_lambda`).
LRSchedule = Literal["cosine", "constant", "wsd"]
#: Gradient checkpointing: auto = on where it pays (see :func:`verity.train.memory.wants_checkpointing`).
Checkpointing = Literal["auto", "on", "off"]


def auto_or_int(value: int | str, name: str) -> int | str:
    """``"auto"`` or a positive integer (a digit string from the command line becomes an int);
    anything else is a one-line error naming ``--name``."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a positive integer or auto") from None
    if n <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} {value}: must be > 0 (or auto)")
    return n


@dataclass
class RunFlags(ChatTemplateFlags):
    """Flags every training run has (RL and SFT)."""

    max_grad_norm: float = flag("--max-grad-norm", default=1.0)
    """Gradient clipping norm (0 = off)."""
    keep_checkpoints: int = flag("--keep-checkpoints", default=2)
    """How many recent checkpoints to keep."""
    resume: bool = flag("--resume", default=False)
    """Continue from the latest checkpoint in --output-dir."""
    overwrite: bool = flag("--overwrite", default=False)
    """Start clean in an --output-dir that already holds a run (its checkpoints, metrics and manifest are deleted)."""
    seed: int = flag("--seed", default=0)
    """Seed for data order, sampling and initialisation."""
    dtype: TrainDType = flag("--dtype", default="auto")
    """Compute dtype (auto = bf16 autocast where the hardware is fast at it; weights stay fp32)."""
    config: str | None = flag("--config", default=None)
    """TOML file with any of these fields; flags given on the command line win."""
    gradient_checkpointing: Checkpointing = flag("--gradient-checkpointing", default="auto")
    """Recompute each decoder layer in backward instead of keeping its activations (auto = on for
    CUDA devices, and where the micro-batch would not fit without it)."""
    dry_run: bool = flag("--dry-run", default=False)
    """Print the memory plan for this model and these settings (read from the model's config.json;
    no weights are loaded) and exit."""
    watchdog_seconds: float = flag("--watchdog-seconds", default=0.0)
    """No step finished in this many seconds: dump all stacks, name the stuck phase, exit 3 (0 = off)."""

    def validate_run(self) -> None:
        """Checks every training run shares (the subclasses' ``validate`` call it)."""
        for name in ("save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: continue the run or start clean")
        if self.watchdog_seconds < 0:
            raise ConfigError(f"--watchdog-seconds {self.watchdog_seconds}: must be >= 0 (0 = off)")
        if self.resume and not getattr(self, "output_dir", None):
            raise ConfigError("--resume needs -o RUN_DIR (the run to continue)")
        self.check_chat_flags()


@dataclass
class RLConfig(RunFlags):
    env: str = flag(positional=True, default="pii-masking")
    """Environment id, importable module, or path to a .py file exposing load_environment."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model to train: local HF directory, hub id, or `verity-tiny`."""
    env_args: str = flag("-a", "--env-args", default="{}")
    """JSON object of keyword arguments for load_environment."""
    group_size: int = flag("--group-size", default=8)
    """Rollouts per prompt (G); advantages are computed within each group."""
    groups_per_batch: int = flag("--groups-per-batch", default=32)
    """Prompts per step; a step trains on group_size × groups_per_batch completions."""
    lr: float = flag("--lr", default=1e-5)
    """AdamW learning rate (constant after warm-up)."""
    max_tokens: int = flag("--max-tokens", default=512)
    """Max completion tokens per rollout."""
    temperature: float = flag("--temperature", default=1.0)
    """Sampling temperature for rollouts."""
    top_p: float = flag("--top-p", default=1.0)
    """Nucleus sampling mass for rollouts."""
    lora_rank: int = flag("--lora-rank", default=32)
    """LoRA rank (0 = full fine-tune)."""
    lora_alpha: float | None = flag("--lora-alpha", default=None)
    """LoRA alpha (default: 2 × rank)."""
    steps: int = flag("--steps", default=100)
    """Number of optimisation steps (batches of rollouts)."""
    loss: LossType = flag("--loss", default="grpo")
    """Loss: grpo (per-sequence mean), dapo (token-level), dr_grpo (constant normaliser), gspo (sequence ratio)."""
    advantage: Estimator = flag("--advantage", default="grpo")
    """Advantage estimator: grpo (reward − group mean) or rloo (leave-one-out baseline)."""
    scale_rewards: Scale = flag("--scale-rewards", default="group")
    """Divide advantages by the group std, the batch std, or not at all."""
    epsilon: float = flag("--epsilon", default=0.2)
    """Lower clip range of the importance ratio (1 − ε)."""
    epsilon_high: float | None = flag("--epsilon-high", default=0.28)
    """Upper clip range (1 + ε_high); DAPO's clip-higher."""
    num_iterations: int = flag("--num-iterations", default=1)
    """Optimiser passes over each batch of rollouts (μ in GRPO)."""
    kl_beta: float = flag("--kl-beta", default=0.0)
    """Weight of the k3 KL penalty to the reference policy (0 = off)."""
    mask_truncated: bool = flag("--mask-truncated", default=False)
    """Exclude completions that hit max_tokens from the loss (DAPO overlong filtering)."""
    micro_batch_size: int | str = flag("--micro-batch-size", default="auto")
    """Sequences per forward/backward (gradient accumulation over the batch); auto = the largest
    that fits the device's free memory, at most 64."""
    max_decode_batch: int | str = flag("--max-decode-batch", default="auto")
    """Sequences the sampler decodes at once (its KV cache holds only these); auto = as many of the
    batch as fit the device's free memory."""
    weight_decay: float = flag("--weight-decay", default=0.0)
    """AdamW weight decay."""
    warmup_steps: int = flag("--warmup-steps", default=0)
    """Linear learning-rate warm-up steps."""
    max_grad_norm: float = flag("--max-grad-norm", default=1.0)
    """Gradient clipping norm (0 = off)."""
    eval_every: int = flag("--eval-every", default=0)
    """Evaluate on the held-out split every K steps (0 = only at the end when --eval-examples > 0)."""
    eval_examples: int = flag("--eval-examples", default=0)
    """Held-out examples per periodic evaluation."""
    save_every: int = flag("--save-every", default=10)
    """Write a checkpoint every K steps (and at the end)."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Run directory (default: outputs/runs/ENV--MODEL--TIME)."""
    sampler: SamplerKind = flag("--sampler", default="local")
    """local: generate with the training model in this process; server: on --sampler-url (vLLM, verity serve)."""
    sampler_url: str | None = flag("--sampler-url", default=None)
    """Comma-separated base URLs of OpenAI-compatible servers (with --sampler server); requests are spread over them."""
    sync_every: int = flag("--sync-every", default=1)
    """With --sampler server: push the LoRA weights to the servers every K steps (before generating)."""
    max_off_policy_steps: int = flag("--max-off-policy-steps", default=0)
    """Generate up to S steps ahead of training on a copy of the policy (0 = synchronous); older batches are dropped."""
    tis_cap: float = flag("--tis-cap", default=2.0)
    """With --max-off-policy-steps: cap C of the truncated importance weight min(pi_learner / pi_sampler, C)."""
    rollout_workers: int = flag("--rollout-workers", default=0)
    """Roll out and score in N Ray actors, each with its own copy of the policy (0 = in this process)."""
    ray_address: str | None = flag("--ray-address", default=None)
    """Ray cluster to run --rollout-workers on (default: start a local Ray)."""
    rollout_seeding: RolloutSeeding = flag("--rollout-seeding", default="auto")
    """batch: one sampling seed per step; group: one per prompt group, from (seed, step, example), so
    rollouts do not depend on how the batch is split over ranks; auto: group under torchrun, else batch."""

    def validate(self) -> None:
        """Reject bad values before any compute."""
        if self.group_size < 2:
            raise ConfigError(f"--group-size {self.group_size}: GRPO needs at least 2 rollouts per group")
        if self.groups_per_batch < 1:
            raise ConfigError(f"--groups-per-batch {self.groups_per_batch}: must be >= 1")
        check_sampling(self.max_tokens, self.temperature, self.top_p,
                       names={k: f"--{k.replace('_', '-')}" for k in ("max_tokens", "temperature", "top_p")})
        if self.temperature == 0:
            raise ConfigError("--temperature 0: RL samples from the policy; greedy decoding gives nothing to train on")
        self.micro_batch_size = auto_or_int(self.micro_batch_size, "micro_batch_size")
        self.max_decode_batch = auto_or_int(self.max_decode_batch, "max_decode_batch")
        for name in ("lr", "max_tokens", "steps", "num_iterations"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be > 0")
        if self.lora_rank < 0:
            raise ConfigError(f"--lora-rank {self.lora_rank}: must be >= 0 (0 = full fine-tune)")
        if not 0 < self.epsilon < 1:
            raise ConfigError(f"--epsilon {self.epsilon}: must be in (0, 1)")
        if self.kl_beta < 0:
            raise ConfigError(f"--kl-beta {self.kl_beta}: must be >= 0")
        check_choices(self)
        if self.sync_every < 1:
            raise ConfigError(f"--sync-every {self.sync_every}: must be >= 1")
        if self.max_off_policy_steps < 0 or self.tis_cap <= 0:
            raise ConfigError(f"--max-off-policy-steps {self.max_off_policy_steps} / --tis-cap {self.tis_cap}: "
                              "need S >= 0 and C > 0")
        if self.max_off_policy_steps and self.sampler == "server":
            raise ConfigError("--max-off-policy-steps runs with --sampler local only (the server path syncs "
                              "synchronously)")
        if self.rollout_workers < 0:
            raise ConfigError(f"--rollout-workers {self.rollout_workers}: must be >= 0")
        if self.rollout_workers and (self.sampler == "server" or self.max_off_policy_steps):
            raise ConfigError("--rollout-workers runs the local sampler synchronously: not with --sampler server "
                              "or --max-off-policy-steps")
        if self.sampler == "server" and not self.sampler_url:
            raise ConfigError("--sampler server needs --sampler-url URL[,URL...]")
        if self.sampler == "server" and self.lora_rank == 0:
            raise ConfigError("--sampler server syncs LoRA adapters (vLLM's load_lora_adapter); full fine-tunes "
                              "(--lora-rank 0) cannot push weights to a server yet")
        self.validate_run()

    @property
    def batch_size(self) -> int:
        return self.group_size * self.groups_per_batch


@dataclass
class SFTConfig(RunFlags):
    data: str | None = flag(positional=True, default=None)
    """JSONL/Parquet file or hub id with prompt/completion or chat messages (or use --from-env)."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model to fine-tune: local HF directory, hub id, or `verity-tiny`."""
    from_env: str | None = flag("--from-env", default=None)
    """Build SFT data from an environment's training split (prompt → formatted gold answer)."""
    env_args: str = flag("-a", "--env-args", default="{}")
    """JSON object of keyword arguments for load_environment (with --from-env)."""
    epochs: float = flag("--epochs", default=1.0)
    """Passes over the data (fractions allowed)."""
    lr: float = flag("--lr", default=1e-4)
    """AdamW peak learning rate (cosine decay to 10% after warm-up)."""
    batch_size: int = flag("--batch-size", default=32)
    """Sequences (or packed rows) per optimiser step."""
    micro_batch_size: int | str = flag("--micro-batch-size", default="auto")
    """Sequences per forward/backward; auto = the largest that fits the device's free memory, at most 32."""
    max_length: int = flag("--max-length", default=1024)
    """Truncate (or pack) sequences to this many tokens."""
    lora_rank: int = flag("--lora-rank", default=0)
    """LoRA rank (0 = full fine-tune)."""
    lora_alpha: float | None = flag("--lora-alpha", default=None)
    """LoRA alpha (default: 2 × rank)."""
    packing: bool = flag("--packing", default=False)
    """Pack several examples per row (attention does not cross example boundaries)."""
    warmup_steps: int = flag("--warmup-steps", default=10)
    """Linear learning-rate warm-up steps."""
    lr_schedule: LRSchedule = flag("--lr-schedule", default="cosine")
    """After warm-up: cosine decay to 10% of --lr, constant, or wsd (constant, then linear decay over --decay-steps)."""
    decay_steps: int = flag("--decay-steps", default=0)
    """Length of the final linear decay of the wsd schedule."""
    weight_decay: float = flag("--weight-decay", default=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = flag("--max-grad-norm", default=1.0)
    """Gradient clipping norm (0 = off)."""
    max_steps: int = flag("--max-steps", default=-1)
    """Stop after this many steps (-1 = run all epochs)."""
    save_every: int = flag("--save-every", default=100)
    """Write a checkpoint every K steps (and at the end)."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Run directory (default: outputs/sft/DATA--MODEL--TIME); the final model is saved in OUT/final."""

    def validate(self) -> None:
        check_choices(self)
        if not self.data and not self.from_env:
            raise ConfigError("give a DATA file/hub id or --from-env ENV")
        self.micro_batch_size = auto_or_int(self.micro_batch_size, "micro_batch_size")
        for name in ("lr", "batch_size", "max_length", "epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be > 0")
        if self.lora_rank < 0:
            raise ConfigError(f"--lora-rank {self.lora_rank}: must be >= 0")
        self.validate_run()


@dataclass
class RMConfig(RunFlags):
    data: str | None = flag(positional=True, default=None)
    """JSONL/Parquet file or hub id with prompt/chosen/rejected pairs (strings or messages)."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model to start from: local HF directory, hub id, or `verity-tiny` (a scalar head is added)."""
    eval_data: str | None = flag("--eval-data", default=None)
    """Held-out pairs: their pairwise accuracy (the chosen completion scored higher; ties count half) and
    mean margin are logged before training, every --eval-every steps and at the end."""
    eval_every: int = flag("--eval-every", default=0)
    """Evaluate on --eval-data every K steps (0 = before and after training only)."""
    epochs: float = flag("--epochs", default=1.0)
    """Passes over the data (fractions allowed)."""
    lr: float = flag("--lr", default=1e-5)
    """AdamW peak learning rate."""
    batch_size: int = flag("--batch-size", default=16)
    """Pairs per optimiser step."""
    micro_batch_size: int = flag("--micro-batch-size", default=8)
    """Pairs per forward/backward (each is two sequences)."""
    max_length: int = flag("--max-length", default=1024)
    """Truncate prompt + completion to this many tokens (rows left with no completion token are dropped)."""
    warmup_steps: int = flag("--warmup-steps", default=0)
    """Linear learning-rate warm-up steps."""
    lr_schedule: LRSchedule = flag("--lr-schedule", default="constant")
    """After warm-up: cosine decay to 10% of --lr, constant, or wsd (see verity sft)."""
    decay_steps: int = flag("--decay-steps", default=0)
    """Length of the final linear decay of the wsd schedule."""
    weight_decay: float = flag("--weight-decay", default=0.0)
    """AdamW weight decay."""
    max_steps: int = flag("--max-steps", default=-1)
    """Stop after this many steps (-1 = run all epochs)."""
    save_every: int = flag("--save-every", default=50)
    """Write a checkpoint every K steps (and at the end)."""
    output_dir: str | None = flag("-o", "--output-dir", default=None)
    """Run directory (default: outputs/KIND/DATA--MODEL--TIME); the final model is saved in OUT/final."""

    def validate(self) -> None:
        check_choices(self)
        if not self.data:
            raise ConfigError("give a DATA file or hub id of preference pairs (make one with `verity prefs`)")
        for name in ("lr", "batch_size", "micro_batch_size", "max_length", "epochs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be > 0")
        if self.eval_every < 0:
            raise ConfigError(f"--eval-every {self.eval_every}: must be >= 0")
        self.validate_run()


@dataclass
class DPOConfig(RMConfig):
    data: str | None = flag(positional=True, default=None)
    """JSONL/Parquet file or hub id with prompt/chosen/rejected (KTO: prompt/completion/label), strings or messages."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model to train (and, frozen, the reference): local HF directory, hub id, or `verity-tiny`."""
    eval_data: str | None = flag("--eval-data", default=None)
    """Held-out pairs: their pairwise accuracy (implicit reward margin > 0, ties count half) and mean
    margin are logged before training, every --eval-every steps and at the end."""
    loss: PrefLossType = flag("--loss", default="sigmoid")
    """sigmoid (DPO), ipo, hinge (SLiC) on pairs, or kto on labelled completions."""
    beta: float = flag("--beta", default=0.1)
    """Inverse temperature of the implicit reward beta·log(pi/pi_ref) (IPO: its tau)."""
    label_smoothing: float = flag("--label-smoothing", default=0.0)
    """Assumed probability that a pair's label is flipped (conservative DPO; sigmoid only)."""
    desirable_weight: float = flag("--desirable-weight", default=1.0)
    """KTO: weight of desirable rows (lambda_D)."""
    undesirable_weight: float = flag("--undesirable-weight", default=1.0)
    """KTO: weight of undesirable rows (lambda_U)."""
    lora_rank: int = flag("--lora-rank", default=0)
    """LoRA rank (0 = full fine-tune); with LoRA the reference is the base with adapters disabled."""
    lora_alpha: float | None = flag("--lora-alpha", default=None)
    """LoRA alpha (default: 2 × rank)."""

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError(f"--beta {self.beta}: must be > 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"--label-smoothing {self.label_smoothing}: must be in [0, 0.5)")
        if self.label_smoothing and self.loss != "sigmoid":
            raise ConfigError(f"--label-smoothing applies to --loss sigmoid only (got --loss {self.loss})")
        if self.lora_rank < 0:
            raise ConfigError(f"--lora-rank {self.lora_rank}: must be >= 0")


@dataclass
class PrefsConfig(EvalFlags):
    env: str = flag(positional=True, default="pii-masking")
    """Environment id, importable module, or path to a .py file exposing load_environment."""
    model: str = flag("-m", "--model", default="verity-tiny")
    """Model that samples the completions: local HF directory, hub id, or `verity-tiny`."""
    output: str | None = flag("-o", "--output", default=None)
    """Preference JSONL to write (prompt/chosen/rejected, or prompt/completion/label with --kto-threshold)."""
    num_examples: int = flag("-n", "--num-examples", default=100)
    """Prompts from the split (-1 = all)."""
    rollouts_per_example: int = flag("-r", "--rollouts-per-example", default=4)
    """Completions sampled per prompt; the best and the worst by reward make a pair."""
    split: Literal["train", "eval"] = flag("--split", default="train")
    """Which split's prompts to sample (eval: held-out pairs)."""
    kto_threshold: float | None = flag("--kto-threshold", default=None)
    """Write KTO rows instead: every completion, labelled desirable when its reward >= this."""
    seed: int = flag("--seed", default=0)
    """Sampling seed (local models are reproducible with the same seed)."""
    dtype: DType = flag("--dtype", default="auto")
    """Weights dtype of the sampling model."""
    overwrite: bool = flag("--overwrite", default=False)
    """Replace an existing -o file."""

    def validate(self) -> None:
        check_choices(self)
        if not self.output:
            raise ConfigError("give -o FILE.jsonl, where the preference rows go")
        out = Path(self.output)
        if out.is_dir():
            raise ConfigError(f"-o {out}: is a directory; give a .jsonl file")
        if out.exists() and not self.overwrite:
            raise ConfigError(f"-o {out}: already exists; pass --overwrite to replace it or choose another -o")
        if self.num_examples == 0 or self.num_examples < -1:
            raise ConfigError(f"-n {self.num_examples}: must be >= 1 (or -1 for all)")
        if self.rollouts_per_example < 2 and self.kto_threshold is None:
            raise ConfigError(f"-r {self.rollouts_per_example}: a pair needs at least 2 completions per prompt")
        if self.rollouts_per_example < 1:
            raise ConfigError(f"-r {self.rollouts_per_example}: must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")
        check_sampling(self.max_tokens, self.temperature, self.top_p, names=SAMPLING_FLAGS)
        parse_env_args(self.env_args)
        parse_env_args(self.sampling_args, "-S")
