"""Entry point of the ``verity`` CLI: dispatches subcommands and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module with `register(subparsers)` and `run(args, argv)`
COMMANDS = {
    "eval": "verity.cli.eval_cmd",
    "train": "verity.cli.train_cmd",
    "sft": "verity.cli.sft_cmd",
    "merge": "verity.cli.merge_cmd",
    "plot": "verity.cli.plot_cmd",
    "envs": "verity.cli.envs_cmd",
    "init": "verity.cli.init_cmd",
    "serve": "verity.cli.serve_cmd",
    "compare": "verity.cli.compare_cmd",
    "demo": "verity.cli.demo_cmd",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="verity", description="RL with verifiable rewards for LLMs.")
    parser.add_argument("--version", action="version", version="verity 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = {}
    for name, mod_name in COMMANDS.items():
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
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        sys.exit(0)
    try:
        code = mods[args.command].run(args, argv)
    except VerityError as e:
        print(f"verity {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"verity {args.command}: interrupted (results written so far are kept)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("VERITY_DEBUG"):
            raise
        from verity.rubrics.rubric import RewardFunctionError

        if isinstance(e, RewardFunctionError):
            print(f"verity {args.command}: error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(code or 0)
