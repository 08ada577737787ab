"""``verity init NAME``: scaffold an installable environment package.

Creates ``DIR/NAME/`` with ``pyproject.toml`` (registering ``NAME`` under the
``verity.environments`` entry-point group), ``<module>.py`` with a working
``load_environment(**kwargs)``, a ``README.md`` and a test. After
``pip install -e DIR/NAME`` the environment is found by ``verity eval NAME``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from verity.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_-]*[A-Za-z0-9])?$")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "init", help="scaffold a new environment package",
        description="Create an installable environment package NAME in DIR (default: current directory).",
    )
    p.add_argument("name", help="environment name: letters, digits, '-' and '_', starting with a letter")
    p.add_argument("-o", "--output-dir", default=".", help="parent directory of the new package (default: .)")


def module_name(name: str) -> str:
    return name.replace("-", "_")


def validate_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"invalid environment name {name!r}: use letters, digits, '-' and '_', "
            "starting with a letter and ending with a letter or digit"
        )
    mod = module_name(name)
    if mod.lower() == "verity" or mod in getattr(sys, "stdlib_module_names", ()):
        raise ConfigError(f"invalid environment name {name!r}: module {mod!r} would shadow an existing module")


def scaffold(name: str, output_dir: str | Path = ".") -> Path:
    """Write the package files; returns the package directory."""
    validate_name(name)
    parent = Path(output_dir).expanduser()
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"-o {output_dir}: not a directory")
    root = parent / name
    if root.exists():
        raise ConfigError(f"{root} already exists; refusing to overwrite it (choose another NAME or -o)")
    mod = module_name(name)
    files = {
        "pyproject.toml": PYPROJECT.format(name=name, module=mod),
        f"{mod}.py": MODULE.format(name=name),
        "README.md": README.format(name=name, module=mod),
        f"tests/test_{mod}.py": TEST.format(module=mod),
    }
    try:
        root.mkdir(parents=True)
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot create {root}: {e.strerror or e}") from None
    return root


def run(args: argparse.Namespace, argv: list[str]) -> int:
    root = scaffold(args.name, args.output_dir)
    mod = module_name(args.name)
    print(f"created environment package {args.name} in {root}")
    print(f"  {root / (mod + '.py')}  <- edit the dataset, parser and rubric here")
    print("next:")
    print(f"  pip install -e {root}")
    print(f"  verity eval {args.name} -m verity-tiny -n 5 -r 2")
    return 0


PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "A verity environment: {name}"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["verity"]

[project.entry-points."verity.environments"]
{name} = "{module}:load_environment"

[tool.setuptools]
py-modules = ["{module}"]
'''

MODULE = '''\
"""``{name}``: a verity environment (scaffolded by ``verity init``).

Task: say the given word in uppercase inside ``<answer>...</answer>`` tags.
Reward = 1.0 x exact match + 0.1 x format. Replace the dataset, parser and reward
functions with your own task; ``load_environment`` must return a verity Environment.
"""

from __future__ import annotations

from typing import Any

import verity

SYSTEM_PROMPT = "Repeat the given word in uppercase letters. Answer inside <answer>...</answer> tags."

WORDS = [
    "apple", "river", "stone", "cloud", "green", "quick", "table", "light", "mouse", "paper",
    "orange", "silver", "window", "garden", "planet", "rocket", "little", "yellow", "bright", "forest",
]


def exact_match_reward(completion: Any, answer: str, parser: Any) -> float:
    """1.0 when the text inside <answer> equals the reference."""
    got = parser.parse_answer(completion)
    return float(got is not None and got.strip() == answer)


def load_environment(num_examples: int = -1, system_prompt: str = SYSTEM_PROMPT) -> verity.SingleTurnEnv:
    """The {name} environment. ``num_examples`` limits the dataset (-1 = all rows)."""
    rows = [{{"question": w, "answer": w.upper()}} for w in WORDS]
    if num_examples >= 0:
        rows = rows[:num_examples]
    parser = verity.XMLParser(["answer"])
    rubric = verity.Rubric([exact_match_reward, parser.get_format_reward_func()], weights=[1.0, 0.1], parser=parser)
    return verity.SingleTurnEnv(dataset=rows, eval_dataset=rows, system_prompt=system_prompt,
                                parser=parser, rubric=rubric)
'''

README = '''\
# {name}

A verity environment, scaffolded by `verity init {name}`.

**Task:** repeat a word in uppercase inside `<answer>...</answer>` tags.
**Reward:** 1.0 x exact match + 0.1 x format.

## Use it

```bash
pip install -e .                                  # registers `{name}` with verity
verity envs                                       # lists it
verity eval {name} -m verity-tiny -n 5 -r 2       # evaluate a model in it
pytest tests                                      # run its tests
```

From Python:

```python
import verity

env = verity.load_environment("{name}")
results = env.evaluate("verity-tiny", num_examples=5, rollouts_per_example=2)
print(results.metrics)
```

## Make it yours

Edit `{module}.py`: build the dataset (a list of dicts or a `datasets.Dataset` with a
`question` or `prompt` column, optional `answer`, `info`, `task`), pick a parser, and
write reward functions that take any of `prompt, completion, answer, info, task, state,
parser` and return a float. Arguments of `load_environment` become `-a '{{"key": value}}'`
options of `verity eval`.
'''

TEST = '''\
"""Tests for the {module} environment (no model needed)."""

import asyncio

from {module} import load_environment


def test_loads():
    env = load_environment(num_examples=3)
    examples = env.get_examples("eval")
    assert len(examples) == 3
    assert examples[0].answer == examples[0].answer.upper()


def test_rubric_rewards_correct_answer():
    env = load_environment(num_examples=1)
    ex = env.get_examples("eval")[0]
    good = [{{"role": "assistant", "content": f"<answer>\\n{{ex.answer}}\\n</answer>"}}]
    bad = [{{"role": "assistant", "content": "no idea"}}]
    s_good = asyncio.run(env.rubric.score(prompt=list(ex.prompt), completion=good, answer=ex.answer))
    s_bad = asyncio.run(env.rubric.score(prompt=list(ex.prompt), completion=bad, answer=ex.answer))
    assert abs(s_good.reward - 1.1) < 1e-9
    assert abs(s_bad.reward - 0.1 * 0.2) < 1e-9  # any text gets the format reward's 0.2 (verifiers 0.1.x)
'''
