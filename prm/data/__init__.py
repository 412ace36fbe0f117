"""Data sources -> stepwise records (see `prm.schema`).

Every format is a converter registered in `FORMATS`: a function ``(row, index, **options) ->
list[record]`` that raises `DataError` naming the field on a bad row. `load` reads a local file
(JSON/JSONL, optionally .gz) or a Hugging Face dataset id, runs the converter, and returns a
`datasets.Dataset` (or an `IterableDataset` with ``streaming=True``).

    >>> from prm.data import load
    >>> ds = load("math_shepherd", "samples_math-shepherd.jsonl")              # doctest: +SKIP
    >>> ds = load("prm800k", "tasksource/PRM800K", split="train", streaming=True)  # doctest: +SKIP

Bad rows raise `DataError` (file, line, field, reason). With ``strict=False`` they are skipped and
counted in a `Report`, which `load` logs and which callers can pass in to read the counts.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from prm.io import iter_json_rows
from prm.registry import Registry
from prm.schema import FEATURES, DataError, OptionError, to_dataset

log = logging.getLogger(__name__)

Converter = Callable[..., list[dict]]
FORMATS: Registry[Converter] = Registry("data format")
# Formats whose rows come from an installed package when no source is given.
PACKAGED_SOURCES: dict[str, Callable[[], Iterator[tuple[str, Any]]]] = {}


@dataclass
class Report:
    """What a conversion read, wrote and rejected (by kind), plus the first few error messages."""

    rows: int = 0
    records: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def reject(self, err: DataError) -> None:
        self.rejected[err.kind] += 1
        if len(self.examples) < 5:
            self.examples.append(str(err))

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def first_reasons(self) -> str:
        """The commonest rejection kinds and one example, for a one-line message."""
        kinds = "; ".join(f"{n} x {kind}" for kind, n in self.rejected.most_common(3))
        return kinds + (f"; e.g. {self.examples[0]}" if self.examples else "")

    def summary(self) -> str:
        lines = [f"read {self.rows} rows, wrote {self.records} records, rejected {self.n_rejected} rows"]
        lines += [f"  {n:6d} x {kind}" for kind, n in self.rejected.most_common()]
        return "\n".join(lines)


def _accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (str, int, float, bool, None, Literal, unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == c and type(value) is type(c) for c in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return True  # an annotation this check does not know: the converter checks the value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}.get(hint, str(hint))


def check_options(fmt: str, options: dict) -> None:
    """Refuse, before any row is read, an option ``fmt`` does not have or a value that does not fit
    the option's annotation (so a typo never turns into every row rejected, or a silent default)."""
    conv = FORMATS.get(fmt)
    params = inspect.signature(conv).parameters
    allowed = [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY]
    hints = typing.get_type_hints(conv)
    for k, v in options.items():
        if k not in allowed:
            raise OptionError(fmt, k, f"format '{fmt}' has no option '{k}'; its options: {', '.join(allowed) or 'none'}")
        if k in hints and not _accepts(v, hints[k]):
            raise OptionError(fmt, k, f"{v!r} is not {_describe(hints[k])}")


def parse_option(fmt: str, key: str, raw: str) -> Any:
    """A command-line option value: JSON when that fits the option (``true``, ``3``, ``null``),
    else the text as given (``--option source=2024`` is the text "2024" for a text option)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    hint = typing.get_type_hints(FORMATS.get(fmt)).get(key) if fmt in FORMATS else None
    if hint is not None and not _accepts(value, hint) and _accepts(raw, hint):
        return raw
    return value


def check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise OptionError("", "limit", f"{limit!r}: give a positive number of records, or no limit")


def convert_rows(
    fmt: str,
    rows: Iterable[tuple[str, Any]],
    *,
    strict: bool = True,
    report: Report | None = None,
    limit: int | None = None,
    **options: Any,
) -> Iterator[dict]:
    """Convert ``(where, row)`` pairs with the converter of ``fmt``; yields validated records."""
    conv = FORMATS.get(fmt)
    check_options(fmt, options)
    check_limit(limit)
    report = report if report is not None else Report()
    for index, (where, row) in enumerate(rows):
        if limit is not None and report.records >= limit:
            return
        report.rows += 1
        try:
            if isinstance(row, DataError):  # a line that is not valid JSON
                raise row
            if not isinstance(row, dict):
                raise DataError(None, "row is not a JSON object", type(row).__name__)
            records = conv(row, index=index, **options)
        except OptionError:
            raise  # a mistake in the command, not in this row
        except DataError as e:
            e = e if e.where else e.at(where)
            if strict:
                raise e from None
            report.reject(e)
            continue
        for rec in records:
            report.records += 1
            yield rec


def _is_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+/[\w.\-]+", source)) and not source.endswith((".json", ".jsonl", ".gz"))


def iter_source(
    fmt: str, source: str | Path | None, *, split: str = "train", name: str | None = None, streaming: bool = False
) -> Iterable[tuple[str, Any]]:
    """``(where, row)`` pairs from a local file, a hub dataset id, or a format's packaged data."""
    if source is None:
        if fmt in PACKAGED_SOURCES:
            return PACKAGED_SOURCES[fmt]()
        raise OptionError(fmt, "source", f"format '{fmt}' has no packaged data: give a local file or a Hugging Face dataset id (--input)")
    path = Path(source)
    if path.is_file():
        return iter_json_rows(path, bad_lines="yield")
    if path.is_dir() or (isinstance(source, str) and _is_hub_id(source)):
        # A hub id, or a local dataset folder (e.g. a downloaded hub repo): datasets reads both.
        return _hub_rows(str(source), name, split, streaming, local=path.is_dir())
    raise FileNotFoundError(f"no such file: {source} (nor does it look like a Hugging Face dataset id 'owner/name')")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_rows(source: str, name: str | None, split: str, streaming: bool, local: bool) -> Iterator[tuple[str, Any]]:
    """Rows of a hub dataset or a local dataset folder. What `datasets` raises for a source that
    cannot be read (no such dataset, no network, no data files, no such split) becomes one DataError."""
    try:
        hub = datasets.load_dataset(source, name, split=split, streaming=streaming)
        for i, row in enumerate(hub):
            yield f"{source}[{split}] row {i}", row
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        # DatasetsError: e.g. a folder whose files have different columns (GSM8K's train and test
        # splits, or unrelated JSONL files side by side) fails to build as one dataset
        if isinstance(e, DataError):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if local:
            files = sorted(p.name for p in Path(source).iterdir() if p.suffix in (".json", ".jsonl", ".gz", ".parquet", ".csv"))
            hint = f"; give one of its files instead ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''})" if files else ""
            raise DataError(None, "cannot read this folder as a dataset", first + hint, where=source) from None
        if isinstance(e, ConnectionError):
            why = "offline: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set" if _offline() else first
            raise DataError(None, "not a local file, and the Hugging Face hub is unreachable", f"{why}; give the path of a local copy",
                            where=source) from None
        raise DataError(None, "not a local file, and not a readable Hugging Face dataset", first, where=source) from None


def load(
    fmt: str,
    source: str | Path | None = None,
    *,
    split: str = "train",
    name: str | None = None,
    streaming: bool = False,
    strict: bool = True,
    limit: int | None = None,
    report: Report | None = None,
    **options: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load ``source`` in format ``fmt`` as stepwise records.

    Args:
        fmt: a name in `FORMATS` (``python -m prm.data --list`` prints them).
        source: local JSON/JSONL(.gz) path, Hugging Face dataset id, or None for packaged data.
        split, name: hub split and config name.
        streaming: return an `IterableDataset` that converts rows as they are read.
        strict: raise on the first bad row (default) or skip and count bad rows.
        limit: stop once this many records are out; the records of one row stay together, so the
            last row may add a few more (a PRM800K row gives one record per rated path).
        report: a `Report` to fill with counts (also logged when the conversion finishes).
        **options: converter options (e.g. ``label_scheme="binary"`` for PRM800K).
    """
    check_options(fmt, options)
    check_limit(limit)
    report = report if report is not None else Report()
    kw = dict(strict=strict, report=report, limit=limit, **options)
    if streaming:
        def gen() -> Iterator[dict]:
            rows = iter_source(fmt, source, split=split, name=name, streaming=True)
            yield from convert_rows(fmt, rows, **kw)

        return datasets.IterableDataset.from_generator(gen, features=FEATURES)
    rows = iter_source(fmt, source, split=split, name=name)
    ds = to_dataset(convert_rows(fmt, rows, **kw))
    log.info("%s <- %s: %s", fmt, source or "(packaged)", report.summary())
    if report.rows and report.n_rejected == report.rows:
        raise DataError(None, f"every row ({report.rows}) was rejected", report.first_reasons(), where=str(source or fmt))
    return ds


def split_by_problem(ds: datasets.Dataset, test_fraction: float, seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split records so that all solutions of one problem land on the same side (no leakage of a
    problem's reference into the held-out set). Deterministic for a given seed."""
    import hashlib

    def side(prompt: str) -> bool:
        h = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < test_fraction

    held = [side(p) for p in ds["prompt"]]
    train_idx = [i for i, h in enumerate(held) if not h]
    test_idx = [i for i, h in enumerate(held) if h]
    return ds.select(train_idx), ds.select(test_idx)


def resolve_path(path: str | None) -> str | None:
    """Expand ``$PRM_DATA_DIR`` (falling back to `prm.io.data_dir`) and other variables in a path."""
    import os

    from prm.io import data_dir

    if path is None:
        return None
    if "$PRM_DATA_DIR" in path or "${PRM_DATA_DIR}" in path:
        d = data_dir()
        if d is None:
            raise FileNotFoundError(f"{path}: set PRM_DATA_DIR to the folder of local data copies")
        path = path.replace("${PRM_DATA_DIR}", str(d)).replace("$PRM_DATA_DIR", str(d))
    return os.path.expandvars(os.path.expanduser(path))


# Register the converters (import for side effects).
from prm.data import formats as _formats  # noqa: E402, F401
from prm.data import inject as _inject  # noqa: E402, F401
from prm.data import prm800k as _prm800k  # noqa: E402, F401
from prm.data import problems as _problems  # noqa: E402, F401
from prm.data.formats import to_trl  # noqa: E402

__all__ = ["FORMATS", "Report", "check_limit", "check_options", "convert_rows", "parse_option", "iter_source", "load", "resolve_path", "split_by_problem", "to_trl"]
