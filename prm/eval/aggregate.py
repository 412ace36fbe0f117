"""Solution scores from per-step scores (the probability that each step is correct).

Registered by name in `AGGREGATORS` (``min``, ``prod``, ``last``, ``mean``, ``geomean``); `aggregate`
is the one entry point every scorer (step evaluation, best-of-N, inference) uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from prm.registry import Registry

AGGREGATORS: Registry[Callable[[Sequence[float]], float]] = Registry("aggregator")


def _nonempty(scores: Sequence[float]) -> list[float]:
    if len(scores) == 0:
        raise ValueError("cannot aggregate the scores of a solution with no steps")
    return [float(s) for s in scores]


@AGGREGATORS.register("min")
def agg_min(scores: Sequence[float]) -> float:
    return min(_nonempty(scores))


@AGGREGATORS.register("prod")
def agg_prod(scores: Sequence[float]) -> float:
    return math.prod(_nonempty(scores))


@AGGREGATORS.register("last")
def agg_last(scores: Sequence[float]) -> float:
    return _nonempty(scores)[-1]


@AGGREGATORS.register("mean")
def agg_mean(scores: Sequence[float]) -> float:
    s = _nonempty(scores)
    return sum(s) / len(s)


@AGGREGATORS.register("geomean")
def agg_geomean(scores: Sequence[float]) -> float:
    s = _nonempty(scores)
    if min(s) <= 0.0:
        return 0.0
    return math.exp(sum(math.log(x) for x in s) / len(s))


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """Aggregate step scores with the aggregator named ``how`` (min, prod, last, mean, geomean)."""
    return AGGREGATORS.get(how)(scores)
