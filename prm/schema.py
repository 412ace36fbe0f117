"""The one stepwise record every data source converts to, and its validation.

A record is a plain dict (one JSON object per solution)::

    {"prompt": "problem text", "completions": ["step 1", "step 2"], "labels": [1.0, 0.0],
     "answer": "42", "id": "gsm8k-train-17", "source": "gsm8k", "label_scheme": "binary",
     "meta": {}}

``label_scheme`` says how to read ``labels`` (it is never guessed from the values):

- ``binary``: 1 = correct step, 0 = wrong step.
- ``ternary``: PRM800K ratings as class ids, 0 = negative (-1), 1 = neutral (0), 2 = positive (+1).
- ``soft``: a float in [0, 1] (Monte-Carlo success rate, or (r + 1) / 2 for a reward r in [-1, 1]).
- ``none``: no step labels at all (problem sets and reference solutions used for generation).

A ``None`` label means "no supervision for this step" (e.g. steps after the first error in
PRM800K phase 2); such steps are still part of the context the model sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import datasets

LABEL_SCHEMES = ("binary", "ternary", "soft", "none")

# PRM800K rating -> ternary class id, and the class names in id order.
TERNARY_FROM_RATING = {-1: 0, 0: 1, 1: 2}
TERNARY_NAMES = ("negative", "neutral", "positive")
BINARY_NAMES = ("incorrect", "correct")

RECORD_FIELDS = ("prompt", "completions", "labels", "answer", "id", "source", "label_scheme", "meta")

# Arrow schema of a stepwise dataset: labels are float64 with nulls, so hard class ids, soft
# targets and "no label" share one column; meta is free-form JSON.
FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "completions": datasets.List(datasets.Value("string")),
        "labels": datasets.List(datasets.Value("float64")),
        "answer": datasets.Value("string"),
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "label_scheme": datasets.Value("string"),
        "meta": datasets.Json(),
    }
)


class DataError(ValueError):
    """A bad input row. Names where it is (file and line, once known), the field, and why.

    Converters raise it with ``field`` and ``reason``; the loader adds ``where`` (``path:line``).
    ``reason`` is short and stable so that rejected rows can be counted by kind.
    """

    def __init__(self, field: str | None, reason: str, detail: str = "", where: str | None = None):
        self.field = field
        self.reason = reason
        self.detail = detail
        self.where = where
        super().__init__(str(self))

    def at(self, where: str) -> DataError:
        return DataError(self.field, self.reason, self.detail, where)

    @property
    def kind(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason

    def __str__(self) -> str:
        parts = [self.where] if self.where else []
        if self.field:
            parts.append(f"field '{self.field}'")
        msg = ": ".join([*parts, self.reason])
        return msg + (f" ({self.detail})" if self.detail else "")


class OptionError(DataError, TypeError):
    """A bad converter option (an unknown name or a value of the wrong kind): a mistake in the
    command, not in a row, so it stops a conversion even with ``strict=False``. (A TypeError too,
    as a wrong keyword argument is.)"""

    def __init__(self, fmt: str, option: str, reason: str):
        self.fmt, self.option = fmt, option
        super().__init__(option, reason)

    def __str__(self) -> str:
        return f"format '{self.fmt}', option '{self.option}': {self.reason}" if self.fmt else f"option '{self.option}': {self.reason}"


def _check_finite(value: Any, field: str) -> None:
    """Reject NaN and infinities anywhere in a JSON-like value: standard JSON cannot hold them and
    they are never a meaningful label, score or answer."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(field, "not a finite number", repr(value))
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{field}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{field}[{i}]")


def _check_label(value: Any, scheme: str, i: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):  # TRL stores binary labels as bools
        if scheme == "ternary":  # True would become class 1, "neutral"
            raise DataError("labels", "true/false label under label_scheme 'ternary'", f"step {i}: {value!r}; bools are binary labels")
        value = float(value)
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        raise DataError("labels", "label is not a number, bool or null", f"step {i}: {value!r}")
    value = float(value)
    if scheme == "binary" and value not in (0.0, 1.0):
        raise DataError("labels", "binary label not in {0, 1}", f"step {i}: {value}")
    if scheme == "ternary" and value not in (0.0, 1.0, 2.0):
        raise DataError("labels", "ternary label not in {0, 1, 2}", f"step {i}: {value}")
    if scheme == "soft" and not 0.0 <= value <= 1.0:
        raise DataError("labels", "soft label outside [0, 1]", f"step {i}: {value}")
    if scheme == "none":
        raise DataError("labels", "label given but label_scheme is 'none'", f"step {i}: {value}")
    return value


def make_record(
    prompt: str,
    completions: Sequence[str],
    labels: Sequence[Any] | None,
    label_scheme: str,
    *,
    answer: Any = None,
    id: str = "",
    source: str = "",
    meta: dict | None = None,
) -> dict:
    """Build a validated record. ``labels=None`` means all steps unlabeled."""
    if labels is None:
        labels = [None] * len(completions)
    return validate_record(
        {
            "prompt": prompt,
            "completions": list(completions),
            "labels": list(labels),
            "answer": answer,
            "id": id,
            "source": source,
            "label_scheme": label_scheme,
            "meta": meta or {},
        }
    )


def validate_record(rec: dict) -> dict:
    """Check a record against the rules above and return a normalized copy.

    Raises DataError naming the field. Normalizes: bool labels -> float, numeric answer -> str.
    """
    if not isinstance(rec, dict):
        raise DataError(None, "record is not a JSON object", type(rec).__name__)
    unknown = set(rec) - set(RECORD_FIELDS)
    if unknown:
        raise DataError(sorted(unknown)[0], "unknown field", f"known: {', '.join(RECORD_FIELDS)}")
    scheme = rec.get("label_scheme")
    if scheme not in LABEL_SCHEMES:
        raise DataError("label_scheme", "unknown label scheme", f"{scheme!r}; known: {', '.join(LABEL_SCHEMES)}")
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError("prompt", "missing or empty prompt")
    steps = rec.get("completions")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError("completions", "completions must be a list of strings")
    if not steps and scheme != "none":
        raise DataError("completions", "no steps in a labeled record")
    for i, s in enumerate(steps):
        if not s.strip():
            raise DataError("completions", "empty step", f"step {i}")
    labels = rec.get("labels")
    if labels is None and scheme == "none":
        labels = [None] * len(steps)
    if not isinstance(labels, list):
        raise DataError("labels", "labels must be a list")
    if len(labels) != len(steps):
        raise DataError("labels", "labels/steps length mismatch", f"{len(labels)} labels for {len(steps)} steps")
    labels = [_check_label(v, scheme, i) for i, v in enumerate(labels)]
    answer = rec.get("answer")
    if answer is not None and not isinstance(answer, str):
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            _check_finite(answer, "answer")
            answer = str(answer)
        else:
            raise DataError("answer", "answer must be a string, a number or null", repr(answer)[:80])
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError("meta", "meta must be a JSON object")
    _check_finite(meta, "meta")
    for name in ("id", "source"):  # text or a number; anything else would be stored as its Python repr
        v = rec.get(name)
        if v is not None and (isinstance(v, (bool, dict, list)) or (isinstance(v, float) and not math.isfinite(v))):
            raise DataError(name, "expected text or a number", repr(v)[:80])
    return {
        "prompt": prompt,
        "completions": steps,
        "labels": labels,
        "answer": answer,
        "id": str(rec.get("id") or ""),
        "source": str(rec.get("source") or ""),
        "label_scheme": scheme,
        "meta": meta,
    }


def to_dataset(records: Iterable[dict]) -> datasets.Dataset:
    """A `datasets.Dataset` of validated records with the fixed stepwise schema."""
    rows = list(records)
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in RECORD_FIELDS}, features=FEATURES)
    return datasets.Dataset.from_list(rows, features=FEATURES)


def label_names(scheme: str) -> tuple[str, ...]:
    """Class names of a hard scheme, in class-id order."""
    return {"binary": BINARY_NAMES, "ternary": TERNARY_NAMES}.get(scheme, ())
