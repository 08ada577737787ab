"""Math answers checked with `math-verify` (the optional ``math`` extra: ``pip install 'verity[math]'``).

:func:`math_equal` compares a model answer with the gold one symbolically/numerically
(``1/2`` = ``0.5`` = ``\\frac{1}{2}``, ``\\boxed{..}`` unwrapped, LaTeX or plain). The answer is
the parser's field (e.g. ``<answer>..</answer>``) when there is one, else the last ``\\boxed{..}``
of the text. Without math-verify installed, :func:`math_equal` falls back to comparing the two
as numbers and says so once (a warning naming the extra).

:class:`MathRubric` is a :class:`~verity.rubrics.rubric.Rubric` with ``correct_answer`` (1/0).
"""

from __future__ import annotations

import re
import threading
import warnings
from typing import Any

from verity.parsers.base import Parser
from verity.rubrics.rubric import Rubric

_BOXED = re.compile(r"\\boxed\s*\{")
_THOUSANDS = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")
_warned = False


def math_verify_available() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    starts = [m.end() for m in _BOXED.finditer(text or "")]
    if not starts:
        return None
    i = starts[-1]
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1] if depth == 0 else None


def _clean(s: str) -> str:
    s = s.strip().strip("$").strip()
    return s.replace(",", "") if _THOUSANDS.fullmatch(s) else s


def _as_number(s: str) -> float | None:
    try:
        return float(_clean(s))
    except ValueError:
        return None


def _fallback_equal(answer: str, gold: str) -> bool:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("math-verify is not installed (pip install 'verity[math]'): math answers are compared as "
                      "plain numbers", stacklevel=3)
    a, g = _as_number(answer), _as_number(gold)
    return a is not None and a == g


def math_equal(answer: str | None, gold: str) -> bool:
    """Whether ``answer`` is mathematically equal to ``gold`` (math-verify; numbers without it)."""
    if answer is None or not answer.strip():
        return False
    if not math_verify_available():
        return _fallback_equal(answer, gold)
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set
    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else 0  # 0 = no timeout (math-verify treats 0 and None alike)

    def _parse(s: str) -> Any:
        s = _clean(s)
        return parse(s if "\\boxed" in s or s.startswith("$") else f"${s}$", parsing_timeout=timeout)

    gold_p, ans_p = _parse(gold), _parse(answer)
    if not gold_p or not ans_p:
        return False
    return bool(verify(gold_p, ans_p, timeout_seconds=timeout))


def extract_math_answer(completion: Any, parser: Parser) -> str | None:
    """The parser's answer when it has one (and its last ``\\boxed{}`` if inside), else the last boxed."""
    got = parser.parse_answer(completion)
    if got and got.strip():
        return last_boxed(got) or got
    text = Parser().parse_answer(completion) or ""
    return last_boxed(text)


def correct_answer(completion, answer, parser) -> float:
    """1.0 when the answer extracted with the rubric's parser equals the gold answer (math-verify)."""
    return float(math_equal(extract_math_answer(completion, parser), answer))


class MathRubric(Rubric):
    """``correct_answer`` (weight 1, first) + any further ``funcs``; pickles when they do."""

    def __init__(self, funcs: Any = (), weights: Any = None, parser: Parser | None = None, **kwargs: Any):
        funcs = list(funcs)
        weights = [1.0] * len(funcs) if weights is None else list(weights)
        super().__init__([correct_answer, *funcs], [1.0, *weights], parser=parser, **kwargs)
