"""Step-labeled data from reference solutions: inject one arithmetic error at a known step.

GSM8K reference lines carry calculator annotations ``a*b = <<a*b=c>>c``. For a row, the
``gsm8k_errors`` format yields:

- the reference solution, every step labeled correct (1);
- a copy with one error at a known step: steps before it are correct (1), the changed step is
  wrong (0), and the steps after it are **unlabeled** (None) — they still use the true values, so
  they are neither cleanly right nor wrong, as after the first error in ProcessBench and PRM800K
  phase 2. Two kinds of error, one drawn per row among those that the solution allows:

  - ``calculation``: an annotated computation's result ``c`` becomes a wrong value ``c'`` (in the
    annotation and in the visible text after it): ``48/2 = 25``.
  - ``propagation``: an operand that repeats an earlier step's result becomes a wrong value and the
    step's arithmetic is redone with it, so the step is internally consistent but builds on a
    number the solution never derived: ``48+26 = 74`` after ``48/2 = 24``.

The corrupted step and the wrong value are drawn from a generator seeded by ``seed`` and the row
index, so a conversion is reproducible. Calculator annotations are stripped from the returned text
by default (the visible ``a*b = c`` stays).
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from prm.arith import evaluate as _eval
from prm.data import FORMATS
from prm.data.problems import _CALC, gsm8k
from prm.schema import OptionError, make_record
from prm.steps import answer_step as closing_step

_ANNOT = re.compile(r"<<([^<>=]*)=([^<>]*)>>(\S*)")


def _wrong_value(value: str, rng: random.Random) -> str | None:
    """A plausible wrong result for ``value`` (same format), or None if it is not a number."""
    try:
        v = Fraction(value.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    is_int = v.denominator == 1
    for _ in range(20):
        kind = rng.choice(["add", "mul", "digit"])
        if kind == "add":
            w = v + rng.choice([-10, -2, -1, 1, 2, 10])
        elif kind == "mul":
            w = v * rng.choice([2, 10]) if rng.random() < 0.5 else v / rng.choice([2, 10])
        else:
            w = v + rng.choice([-1, 1]) * 10 ** rng.randint(0, max(0, len(str(abs(int(v)))) - 1))
        if w == v or w < 0 <= v:
            continue
        if is_int and w.denominator != 1:
            continue
        return str(int(w)) if w.denominator == 1 else f"{float(w):g}"
    return None


_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.])")


def _fmt(v: Fraction) -> str:
    return str(int(v)) if v.denominator == 1 else f"{float(v):.4g}"


def _propagation(steps: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    """Change an operand that repeats an earlier result, and redo that step's arithmetic with it."""
    earlier: set[str] = set()
    sites = []
    for i, s in enumerate(steps):
        for m in _ANNOT.finditer(s):
            ops = [o for o in _NUMBER.finditer(m.group(1)) if o.group(0) in earlier]
            if ops and i > 0:
                sites.append((i, m, ops))
        earlier |= {m.group(2).strip() for m in _ANNOT.finditer(s)}
    rng.shuffle(sites)
    for i, m, ops in sites:
        op = rng.choice(ops)
        wrong = _wrong_value(op.group(0), rng)
        if wrong is None:
            continue
        expr = m.group(1)
        new_expr = expr[: op.start()] + wrong + expr[op.end() :]
        value = _eval(new_expr)
        shown_before = steps[i][: m.start()]
        # the visible expression before the annotation repeats the operand: change it there too
        k = shown_before.rfind(op.group(0))
        if value is None or value < 0 or k < 0:
            continue
        result, shown = m.group(2).strip(), m.group(3)
        new_res = _fmt(value)
        new_shown = shown.replace(result, new_res, 1) if result in shown else new_res + shown
        text = shown_before[:k] + wrong + shown_before[k + len(op.group(0)) :] + f"<<{new_expr}={new_res}>>{new_shown}" + steps[i][m.end() :]
        return steps[:i] + [text] + steps[i + 1 :], i
    return None


ERROR_KINDS = ("calculation", "propagation")


def inject_error(steps: list[str], rng: random.Random, kinds: tuple[str, ...] = ("calculation",)) -> tuple[list[str], int, str] | None:
    """Inject one error of a kind drawn from ``kinds`` that the solution allows.
    Returns (new steps, index of the wrong step, kind) or None."""
    for kind in rng.sample(list(kinds), len(kinds)):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind '{kind}'; known: {', '.join(ERROR_KINDS)}")
        hit = _calculation(steps, rng) if kind == "calculation" else _propagation(steps, rng)
        if hit is not None:
            return hit[0], hit[1], kind
    return None


def _calculation(steps: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    """Corrupt one annotated computation's result."""
    sites = [(i, m) for i, s in enumerate(steps) for m in _ANNOT.finditer(s)]
    rng.shuffle(sites)
    for i, m in sites:
        expr, result, shown = m.group(1), m.group(2).strip(), m.group(3)
        wrong = _wrong_value(result, rng)
        if wrong is None:
            continue
        # the visible number after the annotation normally repeats the result (maybe with punctuation)
        new_shown = shown.replace(result, wrong, 1) if result in shown else wrong + shown
        new = steps[i][: m.start()] + f"<<{expr}={wrong}>>{new_shown}" + steps[i][m.end() :]
        return steps[:i] + [new] + steps[i + 1 :], i
    return None


@FORMATS.register("gsm8k_errors")
def gsm8k_errors(row: dict, index: int, *, seed: int = 0, kinds: str = "calculation,propagation", strip_calculator: bool = True, source: str = "gsm8k_errors",
                 answer_step: bool = False) -> list[dict]:
    """GSM8K reference solutions (all steps correct) plus a copy with one injected error at a
    known step (1 before, 0 at, None after); ``kinds``: calculation, propagation. See `prm.data.inject`.
    ``answer_step`` appends "The answer is: N" (`prm.steps.answer_step`) as a last step: labeled 1 in
    the reference, None in the copy (it follows the error)."""
    ref = gsm8k(row, index)[0]
    steps = ref["completions"] + ([closing_step(ref["answer"])] if answer_step else [])
    clean = (lambda ss: [_CALC.sub("", s) for s in ss]) if strip_calculator else (lambda ss: ss)
    out = [make_record(ref["prompt"], clean(steps), [1.0] * len(steps), "binary", answer=ref["answer"], id=f"{source}-{index}-ref", source=source, meta={"injected_at": -1})]
    rng = random.Random(f"{seed}-{index}")
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not chosen or set(chosen) - set(ERROR_KINDS):
        raise OptionError("gsm8k_errors", "kinds", f"{kinds!r}: give a comma-separated list of {', '.join(ERROR_KINDS)}")
    hit = inject_error(steps, rng, chosen)
    if hit is not None:
        bad, k, kind = hit
        labels = [1.0] * k + [0.0] + [None] * (len(bad) - k - 1)
        out.append(make_record(ref["prompt"], clean(bad), labels, "binary", answer=ref["answer"], id=f"{source}-{index}-err", source=source, meta={"injected_at": k, "label": k, "error_kind": kind}))
    return out
