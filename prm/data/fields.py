"""Field access for converters: a missing or mistyped field becomes a DataError that names it."""

from __future__ import annotations

from typing import Any

from prm.schema import DataError

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
    if kind is not None and not isinstance(cur, kind):
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
