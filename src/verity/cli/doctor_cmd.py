"""``verity doctor``: check an environment (dataset, rewards, reward hacking, with -m rollouts and the
chat template); one pass/warn/fail line per check, exit 1 when a check fails."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check an environment: dataset, rewards, reward-hacking probes, rollouts",
                       description="Check an environment; one pass/warn/fail line per check, exit 1 on a failure.")
    p.add_argument("env", help="environment id, importable module, or path to a .py file")
    p.add_argument("-a", "--env-args", default="{}", help="JSON object of keyword arguments for load_environment")
    p.add_argument("-m", "--model", default=None,
                   help="also sample rollouts from this model (local dir, hub id, verity-tiny, or the name at -b)")
    p.add_argument("-b", "--base-url", default=None, help="OpenAI-compatible endpoint serving --model")
    p.add_argument("-k", "--api-key-var", default=None, help="environment variable holding the endpoint's API key")
    p.add_argument("-n", "--num-examples", type=int, default=5, help="eval examples to probe and sample (default 5)")
    p.add_argument("-r", "--rollouts-per-example", type=int, default=4, help="rollouts per example with -m (default 4)")
    p.add_argument("-t", "--max-tokens", type=int, default=None, help="max completion tokens with -m")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one scoring may take (default 30)")
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from verity.config import parse_env_args
    from verity.doctor import diagnose, exit_code, summary
    from verity.envs.registry import load_environment
    from verity.errors import ConfigError
    from verity.types import SamplingArgs

    if args.num_examples < 1 or args.rollouts_per_example < 1:
        raise ConfigError("-n and -r must be >= 1")
    env = load_environment(args.env, **parse_env_args(args.env_args))
    sampler, sampling = None, None
    if args.model is not None:
        from verity.rollout.sampler import make_sampler

        sampler = make_sampler(args.model, base_url=args.base_url, api_key_env=args.api_key_var)
        sampling = SamplingArgs(max_tokens=args.max_tokens or int(env.sampling_args.get("max_tokens", 256)), seed=0)
    checks = asyncio.run(diagnose(env, sampler, args.num_examples, args.rollouts_per_example, sampling,
                                  timeout_s=args.timeout))
    if args.json:
        print(json.dumps({"env": args.env, "checks": [c.__dict__ for c in checks], "summary": summary(checks)}))
    else:
        for c in checks:
            print(f"{c.status.upper():4s}  {c.name:24s} {c.detail}")
        s = summary(checks)
        print(f"{args.env}: {s['pass']} passed, {s['warn']} warnings, {s['fail']} failed")
    return exit_code(checks)
