"""Step-labeled data from reference solutions: inject one arithmetic error at a known step.

GSM8K reference lines carry calculator annotations ``a*b = <<a*b=c>>c``. For a row, the
``gsm8k_errors`` format yields:

- the reference solution, every step labeled correct (1);
- a copy in which one annotated computation's result ``c`` is replaced by a wrong value ``c'``
  (in the annotation and in the visible text after it): steps before it are correct (1), the
  changed step is wrong (0), and the steps after it are **unlabeled** (None) — they still use the
  true ``c``, so they are neither cleanly right nor wrong, as after the first error in
  ProcessBench and PRM800K phase 2.

The corrupted step and the wrong value are drawn from a generator seeded by ``seed`` and the row
index, so a conversion is reproducible. Calculator annotations are stripped from the returned text
by default (the visible ``a*b = c`` stays).
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from prm.data import FORMATS
from prm.data.problems import _CALC, gsm8k
from prm.schema import make_record

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


def inject_error(steps: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    """Corrupt one annotated computation. Returns (new steps, index of the wrong step) or None."""
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
def gsm8k_errors(row: dict, index: int, *, seed: int = 0, strip_calculator: bool = True, source: str = "gsm8k_errors") -> list[dict]:
    """GSM8K reference solutions (all steps correct) plus a copy with one injected arithmetic
    error at a known step (1 before, 0 at, None after). See `prm.data.inject`."""
    ref = gsm8k(row, index)[0]
    steps = ref["completions"]
    clean = (lambda ss: [_CALC.sub("", s) for s in ss]) if strip_calculator else (lambda ss: ss)
    out = [make_record(ref["prompt"], clean(steps), [1.0] * len(steps), "binary", answer=ref["answer"], id=f"{source}-{index}-ref", source=source, meta={"injected_at": -1})]
    rng = random.Random(f"{seed}-{index}")
    hit = inject_error(steps, rng)
    if hit is not None:
        bad, k = hit
        labels = [1.0] * k + [0.0] + [None] * (len(bad) - k - 1)
        out.append(make_record(ref["prompt"], clean(bad), labels, "binary", answer=ref["answer"], id=f"{source}-{index}-err", source=source, meta={"injected_at": k, "label": k}))
    return out
