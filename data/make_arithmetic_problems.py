"""Write data/arithmetic_problems.jsonl: project-written one- and two-step word problems (GSM8K
format: ``question``, ``answer`` with ``<<a*b=c>>`` annotations and ``#### N``).

Why: the embedded generator, SmolLM2-135M-Instruct, solves almost no GSM8K problem (about 3 in 100
even on the two-step `sample_problems.jsonl`), so mistake mining found no question it solves
sometimes and every HE label was -1. On these problems its solve rate spreads from never to
usually (measured with 4 samples at temperature 0.7: about half of the multiplication problems
solved 1-3 times in 4, additions mostly 0-1), which is the pool mining needs. Deterministic:

    python data/make_arithmetic_problems.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jon", "Kira", "Liam", "Maya", "Noah", "Olga", "Pablo"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells", "cards", "balloons", "eggs", "coins"]


def _sol(lines: list[tuple[str, str, int]], answer: int) -> str:
    """GSM8K-style solution: one line per (text before, expression, value)."""
    return "\n".join(f"{pre} {expr} = <<{expr.replace(' ', '')}={val}>>{val}." for pre, expr, val in lines) + f"\n#### {answer}"


def add(r: random.Random, n: str, it: str) -> tuple[str, str]:
    a, b = r.randint(3, 40), r.randint(2, 30)
    verb = r.choice(["gets", "finds", "is given"])
    return f"{n} has {a} {it}. {n} {verb} {b} more {it}. How many {it} does {n} have now?", _sol([(f"{n} has", f"{a} + {b}", a + b)], a + b)


def sub(r: random.Random, n: str, it: str) -> tuple[str, str]:
    b, c = r.randint(2, 25), r.randint(2, 25)
    a = b + c
    verb = r.choice(["gives away", "loses", "sells"])
    return f"{n} has {a} {it} and {verb} {b} of them. How many {it} does {n} have left?", _sol([(f"{n} has", f"{a} - {b}", c)], c)


def mul(r: random.Random, n: str, it: str) -> tuple[str, str]:
    a, b = r.randint(2, 12), r.randint(2, 12)
    q = r.choice([f"{n} buys {a} bags with {b} {it} in each bag. How many {it} does {n} buy?",
                  f"{n} has {a} boxes. Each box holds {b} {it}. How many {it} does {n} have?",
                  f"{n} collects {b} {it} every day for {a} days. How many {it} does {n} collect?"])
    return q, _sol([(f"{n} has", f"{a} * {b}", a * b)], a * b)


def div(r: random.Random, n: str, it: str) -> tuple[str, str]:
    a, b = r.randint(2, 10), r.randint(2, 12)
    q = r.choice([f"{n} shares {a * b} {it} equally among {a} friends. How many {it} does each friend get?",
                  f"{n} packs {a * b} {it} into bags of {b}. How many bags does {n} fill?"])
    each, ans = (a, b) if "friends" in q else (b, a)
    return q, _sol([("That makes", f"{a * b} / {each}", ans)], ans)


def two_step(r: random.Random, n: str, it: str) -> tuple[str, str]:
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(2, 15)
    return (f"{n} buys {a} bags with {b} {it} in each bag and already had {c} {it}. How many {it} does {n} have now?",
            _sol([(f"{n} buys", f"{a} * {b}", a * b), ("In all", f"{a * b} + {c}", a * b + c)], a * b + c))


KINDS = (add, sub, mul, div, two_step)


def make(n_per_kind: int = 40, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for kind in KINDS:
        for _ in range(n_per_kind):
            q, a = kind(r, r.choice(NAMES), r.choice(ITEMS))
            rows.append({"question": q, "answer": a})
    r.shuffle(rows)
    return rows


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "arithmetic_problems.jsonl"
    out.write_text("".join(json.dumps(x) + "\n" for x in make()))
    print(f"wrote {out}")
