"""Build the bundled starter model ``verity-tiny`` from scratch, reproducibly, with verity's own SFT.

1. Synthetic SFT data in the environments' exact prompt formats: PII masking (training split
   only; the eval split stays held out), plus reverse-text and arithmetic so the model is not
   a one-trick model.
2. A byte-level BPE tokenizer trained on that text, with a chat template.
3. A random-init Qwen2-architecture model, trained by :class:`verity.train.sft.SFTTrainer`
   (completion-only loss, bf16 autocast, WSD schedule: warm-up, constant LR, linear decay).
4. Saved in bf16 safetensors to ``src/verity/assets/verity-tiny`` (package data).

The starter must leave RL something to *learn*, not just something to *know*: RL amplifies
choices the model already makes sometimes, it does not teach a new skill in a few minutes. So
the build has two stages (``make starter`` runs both):

* stage 1, gold labels, 4,500 steps: the model learns the format and to copy text and digits
  verbatim (exact match 0.93 at T=1; it acquires copying between steps 2,500 and 3,500);
* stage 2, ``--init`` stage 1 with ``--weak-labels``, 200 steps: the PII answers come from an
  *incomplete labeller* that leaves event dates, lone first names, emails, usernames and IP
  addresses unmasked 80% of the time. The starter then under-masks those kinds, a decision
  that sampling explores and that the environment's verifier (gold labels) rewards.

    python scripts/build_starter.py --steps 4500 --decay-steps 1200 --out S1 --run-dir R1   # stage 1:
        # 4.5 min on one H200 (0.06 s/step), ~3.6 h on 2 idle CPU cores (2.9 s/step)
    python scripts/build_starter.py --init S1 --weak-labels date,email,first,username,ip:0.8 \
        --steps 200 --lr 5e-4 --decay-steps 100 --run-dir R2   # stage 2: 11 min on 2 CPU cores
    python scripts/build_starter.py --data-cache convs.jsonl.gz --data-only  # write the data, e.g. for a GPU box
    python scripts/build_starter.py --steps 5 --rows 400 --out /tmp/vt   # a quick smoke build
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "src" / "verity" / "assets" / "verity-tiny"


def parse_weak_labels(spec: str | None) -> dict[str, float]:
    """``"date,email:0.8"`` -> ``{"date": 0.8, "email": 0.8}`` (kinds left unmasked with that probability)."""
    if not spec:
        return {}
    kinds, _, rate = spec.partition(":")
    try:
        p = float(rate)
    except ValueError:
        raise SystemExit(f"--weak-labels {spec!r}: expected KIND[,KIND...]:RATE, e.g. date,email:0.8") from None
    if not 0.0 <= p <= 1.0:
        raise SystemExit(f"--weak-labels {spec!r}: RATE must be in [0, 1]")
    from verity.envs.pii_masking.generator import check_kinds

    out = {k.strip(): p for k in kinds.split(",") if k.strip()}
    try:
        check_kinds(out)
    except ValueError as e:
        raise SystemExit(f"--weak-labels {spec!r}: {e}") from None
    return out


def build_conversations(rows: int, seed: int, miss_rate: dict[str, float] | None = None) -> list:
    """SFT conversations: the PII training split (weakly labelled when ``miss_rate`` is given) plus
    reverse-text and arithmetic, shuffled."""
    from verity.envs.pii_masking.generator import generate_rows
    from verity.envs.registry import load_environment
    from verity.train.sft_data import rows_from_env

    pii = load_environment("pii-masking", num_rows=rows, random_seed=42)
    convs = rows_from_env(pii)
    if miss_rate:  # same rows, weak answers; the env's train split decides which rows may be used
        weak = {r["question"]: r["answer"] for r in generate_rows(rows, seed=42, miss_rate=miss_rate)}
        fmt = pii.parser.format
        for c in convs:
            question = c[-2]["content"]
            c[-1] = {"role": "assistant", "content": fmt(masked_output=weak[question])}
    n_aux = max(1, len(convs) // 12)
    convs += rows_from_env(load_environment("reverse-text", num_train_examples=n_aux, random_seed=seed))
    convs += rows_from_env(load_environment("arithmetic", num_train_examples=n_aux, random_seed=seed))
    random.Random(seed).shuffle(convs)
    return convs


def load_or_build(rows: int, seed: int, cache: str | None, miss_rate: dict[str, float] | None = None) -> list:
    """The conversations; with ``--data-cache`` they are read from (or first written to) a gzipped JSONL,
    so that a machine without Faker/datasets (e.g. a GPU box) can run the SFT part of the build."""
    if cache and Path(cache).is_file():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    convs = build_conversations(rows, seed, miss_rate)
    if cache:  # written under a temporary name, then renamed: a killed run never leaves a torn cache
        tmp = Path(f"{cache}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps([dict(m) for m in c]) + "\n" for c in convs)
        os.replace(tmp, cache)
    return convs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ASSET_DIR), help="output model directory")
    ap.add_argument("--rows", type=int, default=50_000, help="PII rows generated (80%% are used for training)")
    ap.add_argument("--steps", type=int, default=4500, help="SFT steps")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--decay-steps", type=int, default=1200, help="final linear LR decay (WSD schedule)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--run-dir", default="outputs/build-verity-tiny", help="SFT run directory (checkpoints, metrics)")
    ap.add_argument("--data-cache", default=None,
                    help="gzipped JSONL of the conversations: read if present (with the labels it was written with; "
                    "--weak-labels does not change an existing cache), else written")
    ap.add_argument("--data-only", action="store_true", help="write --data-cache and stop")
    ap.add_argument("--resume", action="store_true",
                    help="continue the SFT run in --run-dir from its latest checkpoint")
    ap.add_argument("--init", default=None, help="start from this model (and its tokenizer) instead of a random init")
    ap.add_argument("--weak-labels", default=None, metavar="KIND[,KIND...]:RATE",
                    help="PII answers leave these kinds unmasked with probability RATE (an incomplete labeller)")
    args = ap.parse_args()

    import torch

    from verity.models.tokenizer import make_tiny_model, train_bpe_tokenizer
    from verity.train.config import SFTConfig
    from verity.train.sft import SFTTrainer

    torch.manual_seed(args.seed)
    t0 = time.time()
    miss_rate = parse_weak_labels(args.weak_labels)
    convs = load_or_build(args.rows, args.seed, args.data_cache, miss_rate)
    if args.data_only:
        print(f"wrote {len(convs)} conversations to {args.data_cache}")
        return
    # the random init lives next to the run folder, which SFT requires empty unless resuming
    init_dir = Path(args.init) if args.init else Path(f"{args.run_dir.rstrip('/')}-init")
    if args.init and not (init_dir / "config.json").is_file():
        raise SystemExit(f"--init {args.init}: not a model directory (no config.json)")
    if not args.init and not (args.resume and (init_dir / "config.json").is_file()):
        tok = train_bpe_tokenizer([m["content"] for c in convs[:6000] for m in c], vocab_size=args.vocab)
        make_tiny_model(str(init_dir), tokenizer=tok, hidden_size=args.hidden, num_layers=args.layers,
                        num_heads=max(1, args.hidden // 64), seed=args.seed, max_position_embeddings=1024)
    print(f"data: {len(convs)} conversations; {time.time() - t0:.0f}s", flush=True)
    cfg = SFTConfig(data=None, from_env="pii-masking", model=str(init_dir), lr=args.lr, batch_size=args.batch_size,
                    micro_batch_size=args.batch_size, max_length=768, warmup_steps=min(20, args.steps // 5 + 1),
                    lr_schedule="wsd", decay_steps=args.decay_steps, max_steps=args.steps, epochs=100.0,
                    save_every=args.save_every, keep_checkpoints=100, output_dir=args.run_dir, seed=args.seed,
                    resume=args.resume)
    trainer = SFTTrainer(convs, str(init_dir), cfg)
    trainer.train()
    model = trainer.model.to(torch.bfloat16)
    model.generation_config.eos_token_id = trainer.tokenizer.eos_token_id
    model.save_pretrained(args.out, safe_serialization=True)
    trainer.tokenizer.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved {args.out}: {n / 1e6:.1f}M params, {args.steps} steps, {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
