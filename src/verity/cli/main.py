"""Entry point of the ``verity`` CLI: dispatches subcommands and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import NoReturn

# subcommand -> (module with `register(subparsers)` and `run(args, argv)`, one-line help for `verity --help`).
# Only the module of the command being run is imported, so `verity --help` and `verity eval` against an
# endpoint never import torch; tests/test_cli_eval.py checks these lines against each module's own help.
COMMANDS = {
    "eval": ("verity.cli.eval_cmd", "evaluate a model in an environment"),
    "train": ("verity.cli.train_cmd", "RL-train a model in an environment (GRPO family, LoRA)"),
    "sft": ("verity.cli.sft_cmd", "supervised fine-tuning (completion-only loss)"),
    "dpo": ("verity.cli.dpo_cmd", "preference training: DPO, IPO, hinge or KTO against the frozen base"),
    "prefs": ("verity.cli.prefs_cmd", "make preference pairs from an environment: best vs worst of R samples"),
    "rm": ("verity.cli.rm_cmd", "train a Bradley-Terry reward model (scalar head on the LM) on preference pairs"),
    "merge": ("verity.cli.merge_cmd", "merge a LoRA adapter into the base model and export a HF model dir"),
    "plot": ("verity.cli.plot_cmd", "redraw a run's reward/loss curve"),
    "envs": ("verity.cli.envs_cmd", "list available environments"),
    "init": ("verity.cli.init_cmd", "scaffold a new environment package"),
    "serve": ("verity.cli.serve_cmd", "serve a model over an OpenAI-compatible API"),
    "compare": ("verity.cli.compare_cmd", "compare models on the same examples and seeds"),
    "demo": ("verity.cli.demo_cmd", "RL-train verity-tiny on pii-masking and compare base vs trained (offline)"),
    "doctor": ("verity.cli.doctor_cmd", "check an environment: dataset, rewards, reward-hacking probes, rollouts"),
}


class OneLineErrors(argparse.ArgumentParser):
    """A bad flag is one line on stderr (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The CLI parser: every command fully when ``argv`` is None, else only the command named in ``argv``
    (the others are listed with their one-line help; their modules are not imported)."""
    from verity import __version__

    parser = OneLineErrors(prog="verity", description="RL with verifiable rewards for LLMs.")
    parser.add_argument("--version", action="version", version=f"verity {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    mods: dict[str, ModuleType] = {}
    for name, (mod_name, summary) in COMMANDS.items():
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                continue  # command not built in this version
            raise
        mod.register(sub)
        mods[name] = mod
    return parser, mods


def main(argv: list[str] | None = None) -> None:
    from verity.errors import VerityError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, mods = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        sys.exit(0)
    try:
        code = mods[args.command].run(args, argv)
    except VerityError as e:
        print(f"verity {args.command}: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"verity {args.command}: interrupted (results written so far are kept)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("VERITY_DEBUG"):
            raise
        from verity.rubrics.rubric import RewardFunctionError

        if isinstance(e, RewardFunctionError):
            print(f"verity {args.command}: error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(code or 0)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n"))
