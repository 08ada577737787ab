"""``calculator``: multi-step arithmetic that the model must solve by calling a calculator tool.

A :class:`~verity.envs.tool_env.ToolEnv` with one tool, ``calculate(expression)``, which
evaluates +, -, *, /, //, %, ** and parentheses on numbers (a parsed expression tree, never
``eval``). Questions mix three- and four-digit operands so mental arithmetic is unreliable.
The model answers inside ``<answer>…</answer>`` once it has what it needs.

Reward = 1.0 × correct answer *and* at least one successful tool call (a correct answer
without calling the tool scores 0 here) + 0.2 × made a successful tool call + 0.1 × format of the
final answer. See README.md in this folder.
"""

from __future__ import annotations

import ast
import json
import operator
import random
from typing import Any

from verity.envs.tool_env import ToolEnv
from verity.parsers.xml import XMLParser
from verity.rubrics.rubric import Rubric
from verity.types import Example, Messages

SYSTEM_PROMPT = ("Solve the arithmetic problem. Use the calculate tool for every computation, then give the "
                 "final number inside <answer>...</answer>.")

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large (limit 64)")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ValueError(f"unsupported expression element: {type(node).__name__}")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: numbers with + - * / // % ** and parentheses, e.g. "(12 + 7) * 3".
    """
    if len(expression) > 200:
        raise ValueError("expression longer than 200 characters")
    value = _eval(ast.parse(expression.strip(), mode="eval"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def make_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, c = rng.randint(100, 999), rng.randint(10, 99), rng.randint(100, 9999)
        op1, op2 = rng.choice("+-*"), rng.choice("+-")
        expr = f"({a} {op1} {b}) {op2} {c}"
        rows.append({"question": f"What is {expr}?", "answer": calculate(expr), "task": "calculator",
                     "info": {"expression": expr}})
    return rows


def _successful_calls(completion: list[dict[str, Any]]) -> int:
    return sum(1 for m in completion if m.get("role") == "tool" and not str(m.get("content", "")).startswith("Error"))


def correct_with_tool(completion: Any, answer: str, parser: XMLParser) -> float:
    """1 when the final answer equals the gold number and at least one tool call succeeded."""
    if not isinstance(completion, list) or _successful_calls(completion) == 0:
        return 0.0
    got = (parser.parse_answer(completion) or "").replace(",", "").strip()
    try:
        return float(abs(float(got) - float(answer)) < 1e-6)
    except ValueError:
        return 0.0


def tool_used(completion: Any) -> float:
    """1 when at least one tool call succeeded."""
    return float(isinstance(completion, list) and _successful_calls(completion) > 0)


def answer_format(completion: Any, parser: XMLParser) -> float:
    """The parser's format score of the last assistant message."""
    msgs = parser.get_assistant_messages(completion)
    return parser.format_score(msgs[-1].get("content") or "") if msgs else 0.0


class CalculatorEnv(ToolEnv):
    """The calculator tool environment (a ToolEnv with a reference solution for `verity doctor`)."""

    def reference_completion(self, example: Example) -> Messages:
        """One ``calculate`` call on the question's expression, its result, then the tagged answer."""
        expr = str(example.info["expression"])
        call = {"id": "call_0", "type": "function",
                "function": {"name": "calculate", "arguments": json.dumps({"expression": expr})}}
        return [{"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": calculate(expr), "tool_call_id": "call_0"},
                {"role": "assistant", "content": f"<answer>\n{example.answer}\n</answer>"}]


def load_environment(num_train_examples: int = 1000, num_eval_examples: int = 100, random_seed: int = 0,
                     max_turns: int = 4, tool_timeout: float = 5.0) -> CalculatorEnv:
    from datasets import Dataset

    parser = XMLParser(["answer"], answer_field="answer", strip_think=True)
    rubric = Rubric([correct_with_tool, tool_used, answer_format], [1.0, 0.2, 0.1], parser=parser)
    return CalculatorEnv(
        tools=[calculate], max_turns=max_turns, tool_timeout=tool_timeout,
        dataset=Dataset.from_list(make_rows(num_train_examples, random_seed)),
        eval_dataset=Dataset.from_list(make_rows(num_eval_examples, random_seed + 1)),
        system_prompt=SYSTEM_PROMPT, parser=parser, rubric=rubric,
        sampling_args={"max_tokens": 256},  # per turn; eval's -t overrides
    )
