"""The offline ``rules`` verifier: check each step's arithmetic exactly, and the final answer.

A step is checked through every computation it writes:

- GSM8K calculator annotations ``<<48/2=24>>``: the expression is evaluated exactly and compared
  with the result;
- plain equations ``a op b = c`` (also chains ``a + b = c = d``, with ``x``/``×``/``÷``, ``$``,
  ``%`` and thousands separators): each ``=`` whose both sides are pure arithmetic is checked.

A written result may be rounded to the digits it shows. A step is wrong if any check fails, correct
if at least one passes and none fails, and *uncheckable* otherwise. Uncheckable steps get the
verifier's ``uncheckable`` policy: ``correct`` (default: prose and setup steps are taken as right),
``previous`` (the verdict of the step before; the first step counts as correct), or ``unlabeled``
(None, no supervision).

The final answer is extracted and compared with the gold answer by `prm.answers`; the step that
states a wrong final answer is wrong (it asserts something false) even when its arithmetic holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from prm.answers import answers_equal, extract_answer
from prm.arith import evaluate, matches
from prm.label.progress import progress
from prm.label.verify.base import Grade, Item, VerifierBase

UNCHECKABLE = ("correct", "previous", "unlabeled")

_ANNOT = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# A run of arithmetic: numbers (with , . $ %), operators, parentheses and spaces.
_ARITH = r"[\d$][\d\s.,$%+\-*/x×÷()]*"
_EQUATION = re.compile(rf"(?<![\w.:])({_ARITH}(?:\s*=\s*{_ARITH})+)")


@dataclass
class StepCheck:
    verdict: bool | None  # None: nothing checkable
    checks: list[str] = field(default_factory=list)  # "48/2=24 ok", "3*4=13 wrong"


def computations(step: str) -> list[tuple[str, str, bool]]:
    """Every computation a step writes (see the module docstring) as (expression, written result,
    whether the result is right), in order."""
    results: list[tuple[str, str, bool]] = []
    for m in _ANNOT.finditer(step):
        v = evaluate(m.group(1))
        if v is not None and m.group(2).strip():
            results.append((m.group(1), m.group(2).strip(), matches(v, m.group(2).strip())))
    plain = _ANNOT.sub("", step)
    for m in _EQUATION.finditer(plain):
        before, after = plain[: m.start()].rstrip(), plain[m.start() + len(m.group(1).rstrip()) :]
        # part of a longer expression written with words ("60 students x 2/3 = 40", "= 5A/5"): skip
        if before.endswith(("+", "-", "*", "/", "x", "×", "÷")) or (after[:1].isalpha()):
            continue
        sides = [s.strip().rstrip(".,") for s in m.group(1).split("=")]
        for lhs, rhs in zip(sides, sides[1:]):
            a, b = evaluate(lhs), evaluate(rhs)
            # only a computation counts: a bare "x = 5" or "5 = 5" carries no claim worth checking
            if a is None or b is None or not re.search(r"\d%?\s*[+\-*/x×÷]\s*[\d($]", lhs):
                continue
            shown = rhs.replace("$", "").replace(",", "").strip()
            if re.fullmatch(r"[\d.]+\s*%", shown):
                # "100/4 = 25%" writes the number 25 with a percent sign; accept either reading
                ok = matches(a, shown) or matches(a, shown.rstrip("% "))
            else:
                ok = matches(a, shown) if re.fullmatch(r"[\d.]+", shown) else a == b
            results.append((lhs, rhs, ok))
    return results


def check_step(step: str) -> StepCheck:
    """Verdict of one step's arithmetic (see the module docstring)."""
    results = [(f"{lhs}={rhs}", ok) for lhs, rhs, ok in computations(step)]
    if not results:
        return StepCheck(None)
    return StepCheck(all(ok for _, ok in results), [f"{c} {'ok' if ok else 'wrong'}" for c, ok in results])


class OfflineVerifier(VerifierBase):
    """What the offline verifiers (rules, reference) share: one solution at a time, a policy for
    steps they cannot check, and the final-answer check."""

    def __init__(self, uncheckable: str = "correct"):
        if uncheckable not in UNCHECKABLE:
            raise ValueError(f"uncheckable must be one of {', '.join(UNCHECKABLE)}")
        self.uncheckable = uncheckable

    def grade_many(self, items: Sequence[Item], desc: str = "grading") -> list[Grade | None]:
        out: list[Grade | None] = []
        with progress(len(items), desc) as bar:
            for it in items:
                out.append(self.grade(*it))
                bar.update()
        return out

    def unchecked(self, verdicts: list[bool | None]) -> bool | None:
        """The verdict of a step with nothing to check, by the ``uncheckable`` policy."""
        return {"correct": True, "unlabeled": None, "previous": verdicts[-1] if verdicts else True}[self.uncheckable]

    @staticmethod
    def final_answer(steps: Sequence[str], gold: str | None, verdicts: list[bool | None]) -> tuple[bool | None, int | None]:
        """(solution correct, index of the step marked wrong for stating a wrong final answer)."""
        answer = extract_answer("\n".join(steps))
        solution_ok = None if answer is None else answers_equal(answer, gold)
        if solution_ok is not False:
            return solution_ok, None
        # the step that states the wrong final answer is wrong; an answer read only across steps
        # (no step states it alone): the last step
        k = next((i for i in range(len(steps) - 1, -1, -1) if extract_answer(steps[i]) is not None), len(steps) - 1)
        verdicts[k] = False
        return solution_ok, k


class RulesVerifier(OfflineVerifier):
    """Offline step grading by exact arithmetic and the final-answer check."""

    name = "rules"

    def grade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade:
        checks = [check_step(s) for s in steps]
        verdicts: list[bool | None] = []
        for c in checks:
            verdicts.append(self.unchecked(verdicts) if c.verdict is None else c.verdict)
        solution_ok, _ = self.final_answer(steps, gold, verdicts)
        return Grade(verdicts, solution_ok, [c.checks for c in checks])
