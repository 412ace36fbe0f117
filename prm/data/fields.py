"""Field access for converters: a missing or mistyped field becomes a DataError that names it."""

from __future__ import annotations

import math
from typing import Any, Literal

from prm.schema import DataError

# The split modes of `prm.steps.split_steps`, as a converter option's annotation.
SplitMode = Literal["auto", "paragraphs", "lines", "headers", "tag"]

_MISSING = object()


def get(row: dict, path: str, kind: type | tuple[type, ...] | None = None, default: Any = _MISSING) -> Any:
    """``row["a"]["b"]`` for ``path="a.b"``; DataError when missing (unless ``default`` is given)
    or not of type ``kind``. A present-but-null value counts as missing."""
    cur: Any = row
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            if default is not _MISSING:
                return default
            raise DataError(path, "missing field")
        cur = cur[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python: true must not pass for the index 1 or the number 1.0
    if kind is not None and (not isinstance(cur, kind) or (isinstance(cur, bool) and bool not in kinds)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(path, f"expected {names}", f"got {type(cur).__name__}")
    return cur


def text(row: dict, path: str, default: Any = _MISSING) -> str:
    """A non-empty string field."""
    value = get(row, path, str, default)
    if isinstance(value, str) and not value.strip() and default is _MISSING:
        raise DataError(path, "empty text")
    return value


def str_list(row: dict, path: str) -> list[str]:
    value = get(row, path, list)
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(path, "expected a list of strings", f"item {i} is {type(v).__name__}")
        if not v.strip():
            raise DataError(path, "empty step", f"item {i}")
    return value


def first_error_verdicts(n_steps: int, first_error: int) -> list[bool | None]:
    """Step verdicts of a first-error index (ProcessBench's ``label``): right before it, wrong at it,
    unknown after; ``first_error = -1`` means every step is right. Labels come from
    `prm.label.labels.first_error_labels`."""
    if first_error == -1:
        return [True] * n_steps
    if not 0 <= first_error < n_steps:
        raise DataError("label", "first-error index out of range", f"{first_error} for {n_steps} steps")
    return [True] * first_error + [False] + [None] * (n_steps - first_error - 1)


def flag(row: dict, path: str) -> bool | None:
    """A yes/no field read strictly: true/false, or the strings "true"/"false" (any case); None
    when absent. Anything else (``"no"``, ``0``, ``"maybe"``) is refused, never taken by truthiness."""
    value = get(row, path, default=None)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(path, "expected true or false", repr(value)[:80])


def answer_text(row: dict, path: str) -> str | None:
    """A final answer: text, or a finite number written as text; None when absent. An object, a
    list, a bool or NaN is refused (it would be stored as its Python repr)."""
    value = get(row, path, default=None)
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise DataError(path, "empty answer")
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise DataError(path, "answer must be text or a finite number", repr(value)[:80])


def unit_float(value: Any, path: str) -> float:
    """A probability-like value in [0, 1] (a number, or a number written as text); NaN, infinities
    and values outside [0, 1] are refused."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise DataError(path, "not a number", repr(value)[:80]) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(path, "not a number", repr(value)[:80])
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DataError(path, "not a number in [0, 1]", repr(value))
    return float(value)
