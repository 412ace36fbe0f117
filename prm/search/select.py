"""Picking one solution out of several: majority vote, PRM best-of-N, PRM-weighted vote.

The one place where a final answer is chosen among candidates; the search strategies and the
best-of-N evaluation over candidate files (`prm.eval.bon`) both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prm.answers import answers_equal
from prm.eval.aggregate import aggregate


def vote(answers: Sequence[str | None], weights: Sequence[float]) -> int:
    """Index of a candidate holding the answer with the largest total weight (equal answers by
    `answers_equal`; ties go to the answer seen first); candidates without an answer never win
    unless none has one."""
    groups: list[tuple[str, float, int]] = []  # (answer, total weight, first index)
    for i, (a, w) in enumerate(zip(answers, weights)):
        if a is None:
            continue
        for g, (ga, gw, gi) in enumerate(groups):
            if a == ga or answers_equal(a, ga):
                groups[g] = (ga, gw + w, gi)
                break
        else:
            groups.append((a, w, i))
    if not groups:
        return 0
    return max(groups, key=lambda g: (g[1], -g[2]))[2]


def pick(candidates: list[dict], method: str) -> int:
    """Index of the candidate that ``method`` picks: ``majority``, ``prm_<agg>`` (highest aggregated
    PRM score) or ``weighted_<agg>`` (the answer with the largest sum of aggregated scores).
    Candidates carry ``answer`` and, for the PRM methods, ``step_scores``."""
    if method == "majority":
        return vote([c["answer"] for c in candidates], [1.0] * len(candidates))
    kind, _, agg = method.partition("_")
    if kind not in ("prm", "weighted") or not agg:
        raise ValueError(f"unknown selection method '{method}'; known: majority, prm_<agg>, weighted_<agg>")
    scores = [aggregate(c["step_scores"], agg) for c in candidates]
    if kind == "prm":
        return int(np.argmax(scores))
    return vote([c["answer"] for c in candidates], scores)
