"""Final answers: extract them from solution text, and decide equality (one trusted function).

Everything in the project that asks "is this answer right?" calls `answers_equal` or `is_correct`;
nothing re-implements a normalizer.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from math_verify import parse, verify

_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_THE_ANSWER = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_PRM800K = re.compile(r"^# Answer\s*\n+\s*(.+?)\s*$", re.MULTILINE)


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}``, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip() or None
    return None


def _tidy(ans: str) -> str | None:
    ans = ans.strip().rstrip(".").strip()
    if ans.startswith("$") and ans.endswith("$") and len(ans) > 1:
        ans = ans.strip("$").strip()
    return ans or None


def extract_answer(text: str | None) -> str | None:
    """The final answer written in a solution, or None when there is none.

    Looks, in order, for the last ``\\boxed{}`` (MATH style), ``#### N`` (GSM8K), PRM800K's
    ``# Answer`` block, and the last "The answer is X" / "final answer is X" line.
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_GSM8K, _PRM800K, _THE_ANSWER):
        found = pattern.findall(text)
        if found:
            return _tidy(found[-1])
    return None


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=65536)
def _parse(ans: str) -> tuple:
    t = _timeout()
    kw = {"parsing_timeout": t} if t else {"parsing_timeout": None}
    # Answers are extracted without their delimiters; math-verify reads LaTeX inside $...$.
    parsed = parse(f"${ans}$", **kw)
    if not parsed:
        parsed = parse(ans, **kw)
    return tuple(parsed)


def answers_equal(pred: str | None, gold: str | None) -> bool:
    """True when the predicted final answer equals the gold one.

    Acceptance rule: both are parsed by math-verify (LaTeX or plain expressions) and compared
    symbolically and numerically (6 decimal places), so ``0.5 == \\frac{1}{2}``,
    ``28,800 == 28800`` and ``x=5 == 5``. When either side cannot be parsed, the two are equal only
    if their whitespace-stripped strings are identical. ``None`` on either side is never equal.
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if not pred or not gold:
        return False
    g, p = _parse(gold), _parse(pred)
    if g and p:
        t = _timeout()
        return bool(verify(list(g), list(p), timeout_seconds=t))
    return "".join(pred.split()) == "".join(gold.split())


def is_correct(solution: str, gold: str | None) -> bool | None:
    """Whether a solution's extracted final answer equals ``gold``; None if it states no answer."""
    pred = extract_answer(solution)
    if pred is None:
        return None
    return answers_equal(pred, gold)
