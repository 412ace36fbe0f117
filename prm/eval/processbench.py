"""ProcessBench-style evaluation: find the first wrong step.

A solution's predicted first error is the first step whose P(correct) is below a threshold (-1
when none is). Per subset: ``acc_error`` = exact-match accuracy on solutions that have an error,
``acc_correct`` = accuracy on solutions without one (predicting -1), ``f1`` = their harmonic mean;
``average`` is the mean F1 over subsets (the ProcessBench paper's definitions; its hub copy has
the subsets gsm8k, math, olympiadbench and omnimath, `load_processbench`). The threshold is fixed by argument or chosen on a dev set
(`choose_threshold`), never on the test set. A solution with no step score at all (an LLM critic
whose reply named no index, every step truncated away) has no prediction and counts as wrong, as
ProcessBench counts a critic reply without an answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

NO_PREDICTION = -2  # no step score: never equal to a label (-1 or a step index)


def first_error(scores: Sequence[float], threshold: float) -> int:
    if not len(scores):
        return NO_PREDICTION
    return next((i for i, s in enumerate(scores) if s < threshold), -1)


def _f1(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def processbench_metrics(
    labels: Sequence[int], scores: Sequence[Sequence[float]], subsets: Sequence[str], threshold: float
) -> dict:
    """F1 per subset and averaged. ``labels[i]`` is the index of the first wrong step or -1."""
    by: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for lab, sc, sub in zip(labels, scores, subsets):
        by[sub].append((int(lab), first_error(sc, threshold)))
    out: dict = {"threshold": threshold, "subsets": {}}
    for sub, pairs in sorted(by.items()):
        err = [p == t for t, p in pairs if t != -1]
        ok = [p == -1 for t, p in pairs if t == -1]
        acc_e = float(np.mean(err)) if err else 0.0
        acc_c = float(np.mean(ok)) if ok else 0.0
        out["subsets"][sub] = {"n": len(pairs), "n_error": len(err), "acc_error": acc_e, "acc_correct": acc_c, "f1": _f1(acc_e, acc_c)}
    out["average_f1"] = float(np.mean([s["f1"] for s in out["subsets"].values()])) if by else 0.0
    return out


def choose_threshold(
    labels: Sequence[int], scores: Sequence[Sequence[float]], subsets: Sequence[str], grid: Sequence[float] | None = None
) -> float:
    """The threshold with the best average F1 on the given (dev) data; ties go to the smaller one."""
    grid = grid if grid is not None else [round(x, 3) for x in np.linspace(0.02, 0.98, 49)]
    best = max(grid, key=lambda t: (processbench_metrics(labels, scores, subsets, t)["average_f1"], -t))
    return float(best)


PROCESSBENCH_HUB = "Qwen/ProcessBench"
PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")


def subset_of(record: dict) -> str:
    """The ProcessBench subset of a converted record: ``meta.subset``, else the hub split it was
    loaded from (its ``source``), else the prefix of an id like ``gsm8k-12``."""
    meta = record.get("meta") or {}
    if meta.get("subset"):
        return str(meta["subset"])
    src = str(record.get("source") or "")
    if src in PROCESSBENCH_SUBSETS:
        return src
    head = str(record.get("id") or "").rsplit("-", 1)[0]
    return head if head in PROCESSBENCH_SUBSETS else src


def load_processbench(data: str | None = None, *, fmt: str = "processbench", subsets: Sequence[str] = PROCESSBENCH_SUBSETS,
                      limit: int | None = None) -> Any:
    """ProcessBench records. ``data=None``: the hub copy (``Qwen/ProcessBench``, one split per
    subset; needs internet); else a local file of ``fmt`` rows (ProcessBench rows: id, generator,
    problem, steps, final_answer_correct, label). ``limit`` applies per subset. A stepwise
    `datasets.Dataset`."""
    import datasets

    from prm.data import load

    if data is not None or fmt != "processbench":  # a local file, or another format's packaged data
        return load(fmt, data, limit=limit)
    unknown = sorted(set(subsets) - set(PROCESSBENCH_SUBSETS))
    if unknown:
        raise ValueError(f"unknown ProcessBench subset(s) {', '.join(unknown)}; known: {', '.join(PROCESSBENCH_SUBSETS)}")
    parts = [load("processbench", PROCESSBENCH_HUB, split=sub, source=sub, limit=limit) for sub in subsets]
    return datasets.concatenate_datasets(parts)
