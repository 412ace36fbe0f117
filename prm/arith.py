"""Exact arithmetic on the expressions that math solutions write (``48/2``, ``3 x 4 + 1``)."""

from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# Symbols people write for the four operations, mapped to Python's.
_SYMBOLS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"})
# "x" is multiplication only between two operands ("3 x 4", "2x(1+2)"); otherwise it is a variable.
_TIMES = re.compile(r"(?<=[\d)%])\s*x\s*(?=[\d($])")
# "28 / 1/5" means 28 divided by one fifth: a fraction written after a spaced division sign.
_DIV_FRACTION = re.compile(r"/\s+(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")


def normalize(expr: str) -> str | None:
    """The Python arithmetic an expression means (what `evaluate` evaluates), or None when it is
    not one."""
    text = _TIMES.sub("*", expr.replace(",", "").replace("$", ""))
    text = _DIV_FRACTION.sub(r"/ (\1/\2)", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", text).translate(_SYMBOLS).strip()
    if not text or not re.fullmatch(r"[\d\s.+\-*/()]+", text) or not re.search(r"\d", text):
        return None
    return text


def evaluate(expr: str) -> Fraction | None:
    """Exact value of an expression of numbers, + - * / (also x × ÷), parentheses and unary minus;
    ``N%`` is N/100, ``a / b/c`` (spaced) is a divided by the fraction b/c; thousands separators and
    ``$`` are ignored. None when it is anything else (an ``x`` that is not between two operands is
    a variable)."""
    text = normalize(expr)
    if text is None:
        return None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError("unsupported expression")

    try:
        return ev(ast.parse(text, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, RecursionError):
        return None


def number(text: str) -> Fraction | None:
    """A written number (``1,000``, ``$2.50``, ``-3``, ``45%`` = 0.45) as an exact Fraction, else None."""
    t = text.replace(",", "").replace("$", "").strip()
    pct = t.endswith("%")
    t = t.rstrip("%").strip()
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", t):
        return None
    return Fraction(t) / 100 if pct else Fraction(t)


def matches(value: Fraction, written: str) -> bool:
    """Whether a written result agrees with an exact value, allowing rounding to the digits shown
    (``1/3 = 0.33`` agrees; ``1/3 = 0.3`` too; ``1/3 = 0.4`` does not)."""
    w = number(written)
    if w is None:
        return False
    decimals = len(written.split(".")[1].rstrip("%").strip()) if "." in written else 0
    if written.strip().endswith("%"):
        decimals += 2
    tol = Fraction(1, 2 * 10**decimals) if decimals or value.denominator != 1 else Fraction(0)
    return abs(value - w) <= tol
