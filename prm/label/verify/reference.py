"""The offline ``reference`` verifier: check each step against the reference solution's chain of
quantities, so a wrong operation or a wrong quantity is caught, not only an arithmetic slip.

Needs each problem's reference solution (``references``: problem text -> reference steps or text),
as GSM8K records carry it (lines with ``<<a*b=c>>`` calculator annotations) and MATH records (the
worked LaTeX solution, where its numbers can be read).

The rule. The *legitimate quantities* of a problem are

1. the numbers of the problem text (also ``half``/``twice``/``double``/``triple``/``dozen``,
   ``one`` .. ``twenty``, and ``N%`` read both as N and N/100);
2. the reference chain: every number the reference solution writes, and the value of every
   computation it writes (GSM8K annotations; ``a op b = c`` equations, LaTeX ``\\frac``/``\\cdot``/
   ``\\times`` read as arithmetic);
3. what is derivable from them the way the reference derives its quantities: each reference
   computation is expanded over its operands (an operand that is an earlier reference result is
   replaced by that result's own computation) and flattened into sums and products, and every
   sub-combination of its terms or factors counts (``3 * 4 * 5`` also legitimizes ``4 * 5 = 20``
   and ``3 * 5 = 15``; ``20 - 5 - 3`` also ``5 + 3 = 8`` and ``20 - 3 = 17``): the same quantities
   computed in another order;
4. the results of the solution's own earlier correct steps (a step may restate them).

A step is checked through the computations it writes (the ones the ``rules`` verifier reads). It
is **wrong** if a computation's arithmetic is wrong (a slip, as ``rules`` finds), or if it computes
a result that is not a legitimate quantity (a wrong operation, ``48 * 2`` where the reference halves
48; a wrong quantity, a number taken from the wrong place). It is **correct** if it computes at least
one quantity and all its results are legitimate, and *uncheckable* otherwise (prose, setup, a
computation the parser cannot read), which gets the ``uncheckable`` policy of the rules verifier
(``correct``, ``previous`` or ``unlabeled``). As with ``rules``, the step that states a wrong final
answer is wrong. A problem without a reference is graded by arithmetic and the final answer only
(``stats["reference"]`` is False).

Limits. A valid solution along another route than the reference's (other intermediate quantities,
e.g. distributing ``(a + b) * 7`` where the reference computes ``a * 7 + b * 7``, or a unit
conversion with a constant the reference does not use) is flagged wrong; a wrong step that happens
to compute a legitimate number passes; quantities stated without a computation ("so she has 96
clips") are not judged; only + - * / arithmetic is read (no powers, roots or algebra: most MATH
steps are uncheckable); values match up to the rounding of the written result.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from itertools import combinations

from prm.arith import evaluate, matches, normalize, number
from prm.label.verify.base import Grade
from prm.label.verify.rules import OfflineVerifier, computations

WORD_NUMBERS = {"half": (2, Fraction(1, 2)), "twice": (2,), "double": (2,), "triple": (3,), "thrice": (3,), "dozen": (12,),
                "quarter": (4, Fraction(1, 4)), "third": (3, Fraction(1, 3)), "hundred": (100,), "thousand": (1000,)}
WORD_NUMBERS.update({w: (i,) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())})
_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?\s*%?")
_ANNOT = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
MAX_TERMS = 10  # sub-combinations of a flat sum/product with more terms are not enumerated (2^n)


def delatex(text: str) -> str:
    """LaTeX arithmetic as plain arithmetic (``\\frac{a}{b}`` -> ``((a)/(b))``, ``\\cdot`` -> ``*``);
    text without a backslash is returned as is."""
    if "\\" not in text:
        return text
    t = text
    for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"),
                 ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("$", " ")):
        t = t.replace(a, b)
    for _ in range(4):  # nested fractions, innermost first
        t = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", t)
    t = re.sub(r"\\frac(\d)(\d)", r"(\1/\2)", t)
    return t.replace("{", "(").replace("}", ")")


def numbers_in(text: str) -> set[Fraction]:
    """Every number written in a text (``N%`` also as N/100)."""
    out: set[Fraction] = set()
    for m in _NUMBER.finditer(text):
        w = m.group(0)
        v = number(w.rstrip("%").strip())
        if v is not None:
            out.add(v)
            if w.strip().endswith("%"):
                out.add(v / 100)
    return out


def problem_numbers(problem: str) -> set[Fraction]:
    out = numbers_in(delatex(problem))
    for w in re.findall(r"[a-z]+", problem.lower()):
        out.update(Fraction(v) for v in WORD_NUMBERS.get(w, ()))
    return out


# A flat expression: ("num", value) | ("sum", [(sign, flat)]) | ("prod", [(exponent, flat)])
def _flat(node: ast.AST, known: Mapping[Fraction, tuple]) -> tuple:
    if isinstance(node, ast.Expression):
        return _flat(node.body, known)
    if isinstance(node, ast.Constant):
        v = Fraction(str(node.value))
        return known.get(v, ("num", v))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return ("sum", [(-1, _flat(node.operand, known))])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return _flat(node.operand, known)
    if isinstance(node, ast.BinOp):
        kind = "sum" if isinstance(node.op, (ast.Add, ast.Sub)) else "prod"
        inverse = isinstance(node.op, (ast.Sub, ast.Div))
        parts = []
        for side, flip in ((node.left, 1), (node.right, -1 if inverse else 1)):
            f = _flat(side, known)
            parts += [(s * flip, c) for s, c in f[1]] if f[0] == kind else [(flip, f)]
        return (kind, parts)
    raise ValueError("not arithmetic")


def _value(f: tuple) -> Fraction:
    if f[0] == "num":
        return f[1]
    if f[0] == "sum":
        return sum((s * _value(c) for s, c in f[1]), Fraction(0))
    out = Fraction(1)
    for e, c in f[1]:
        out = out * _value(c) if e > 0 else out / _value(c)
    return out


def _subvalues(f: tuple, out: set[Fraction]) -> None:
    """The value of ``f`` and of every sub-combination of its flat sums and products (see the module docstring)."""
    try:
        out.add(_value(f))
    except ZeroDivisionError:
        return
    if f[0] == "num":
        return
    vals = []
    for s, c in f[1]:
        _subvalues(c, out)
        try:
            vals.append((s, _value(c)))
        except ZeroDivisionError:
            return
    if len(vals) > MAX_TERMS:
        return
    for r in range(1, len(vals)):
        for sub in combinations(vals, r):
            if f[0] == "sum":
                v = sum((s * x for s, x in sub), Fraction(0))
                out.update((v, -v))
            else:
                v = Fraction(1)
                for e, x in sub:
                    if x == 0 and e < 0:
                        break
                    v = v * x if e > 0 else v / x
                else:
                    out.add(v)
                    if all(e < 0 for e, _ in sub):  # a product of divisors: the quantity divided by
                        out.add(1 / v)


def reference_chain(problem: str, reference: str | Sequence[str]) -> set[Fraction]:
    """The legitimate quantities 1-3 of the module docstring for one problem."""
    text = delatex(reference if isinstance(reference, str) else "\n".join(reference))
    given = problem_numbers(problem)
    legit = given | numbers_in(_ANNOT.sub("", text))
    known: dict[Fraction, tuple] = {}  # reference result -> its flat computation (operands that are earlier results expand)
    exprs = [m.group(1) for m in _ANNOT.finditer(text)] + [lhs for lhs, _, _ in computations(_ANNOT.sub("", text))]
    for e in exprs:
        norm = normalize(e)
        if norm is None:
            continue
        try:
            f = _flat(ast.parse(norm, mode="eval"), {v: t for v, t in known.items() if v not in given})
        except (SyntaxError, ValueError):
            continue
        _subvalues(f, legit)
        try:
            known[_value(f)] = f
        except ZeroDivisionError:
            continue
    return legit


class ReferenceVerifier(OfflineVerifier):
    """Offline step grading against the reference solution's quantities (see the module docstring)."""

    name = "reference"

    def __init__(self, references: Mapping[str, str | Sequence[str]] | None = None, uncheckable: str = "correct"):
        super().__init__(uncheckable)
        self.references = dict(references or {})
        self._chains: dict[str, set[Fraction]] = {}

    def chain(self, problem: str) -> set[Fraction] | None:
        if problem not in self.references:
            return None
        if problem not in self._chains:
            self._chains[problem] = reference_chain(problem, self.references[problem])
        return self._chains[problem]

    def grade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade:
        chain = self.chain(problem)
        legit = set(chain or ()) | ({v} if gold is not None and (v := number(gold)) is not None else set())
        verdicts: list[bool | None] = []
        details: list[list[str]] = []
        for step in steps:
            notes, verdict = [], None
            for lhs, rhs, ok in computations(delatex(step)):
                q = evaluate(rhs)
                if not ok:
                    notes.append(f"{lhs}={rhs} wrong arithmetic")
                    verdict = False
                elif chain is not None and not any(matches(v, rhs.replace("$", "").strip()) for v in legit if q is not None):
                    notes.append(f"{lhs}={rhs}: {rhs.strip()} is not in the reference chain nor derivable")
                    verdict = False
                else:
                    notes.append(f"{lhs}={rhs} ok")
                    verdict = True if verdict is None else verdict
            if verdict:  # a correct step's results are known from here on
                legit.update(v for _, rhs, _ in computations(delatex(step)) if (v := evaluate(rhs)) is not None)
            verdicts.append(self.unchecked(verdicts) if verdict is None else verdict)
            details.append(notes)
        solution_ok, k = self.final_answer(steps, gold, verdicts)
        if k is not None:
            details[k].append("states a wrong final answer")
        return Grade(verdicts, solution_ok, details, stats={"reference": chain is not None})
