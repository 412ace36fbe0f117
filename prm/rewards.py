"""Step rewards (HE, SE, Monte-Carlo) and solution scores from step scores.

HE and SE are the two step rewards of the original prm_exp.py, kept exactly:

- HE (hard): ``r = +1.0`` if the whole solution is correct AND the step is correct, else ``-1.0``.
- SE (soft): with ``p = step_position / total_steps`` and **1-based** ``step_position``
  (the first step has p = 1/n, the last p = 1): a correct step gets ``0.5 + 0.5 p`` and a wrong
  step ``-0.5 - 0.5 p``. 1-based so that the final step of a solution carries the full +-1 that HE
  gives it, and the reward grows in magnitude along the solution; the first step gets
  +-(0.5 + 0.5/n). SE does not look at the solution's final answer (as in the original).

A reward r in [-1, 1] becomes a soft training label with ``reward_to_label(r) = (r + 1) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from prm.registry import Registry

REWARD_TYPES = ("HE", "SE")


def he_reward(step_correct: bool, solution_correct: bool) -> float:
    return 1.0 if (solution_correct and step_correct) else -1.0


def se_reward(step_correct: bool, step_position: int, total_steps: int) -> float:
    """SE reward of the step at 1-based ``step_position`` out of ``total_steps``."""
    if not 1 <= step_position <= total_steps:
        raise ValueError(f"step_position must be in 1..{total_steps} (1-based), got {step_position}")
    p = step_position / total_steps
    return 0.5 + 0.5 * p if step_correct else -0.5 - 0.5 * p


def step_rewards(kind: str, step_correct: Sequence[bool], solution_correct: bool) -> list[float]:
    """HE or SE rewards for every step of one solution."""
    n = len(step_correct)
    if kind == "HE":
        return [he_reward(c, solution_correct) for c in step_correct]
    if kind == "SE":
        return [se_reward(c, i + 1, n) for i, c in enumerate(step_correct)]
    raise ValueError(f"unknown reward type '{kind}'; known: {', '.join(REWARD_TYPES)}")


def reward_to_label(r: float) -> float:
    """Map a reward in [-1, 1] to a soft label in [0, 1]."""
    if not -1.0 <= r <= 1.0:
        raise ValueError(f"reward must be in [-1, 1], got {r}")
    return (r + 1.0) / 2.0


def mc_hard(completion_correct: Sequence[bool]) -> float:
    """Math-Shepherd hard estimate: 1 if any rollout from the prefix reaches the gold answer."""
    if not completion_correct:
        raise ValueError("Monte-Carlo estimate needs at least one completion")
    return 1.0 if any(completion_correct) else 0.0


def mc_soft(completion_correct: Sequence[bool]) -> float:
    """Math-Shepherd soft estimate: fraction of rollouts from the prefix that reach the gold answer."""
    if not completion_correct:
        raise ValueError("Monte-Carlo estimate needs at least one completion")
    return sum(bool(c) for c in completion_correct) / len(completion_correct)


# Solution score from per-step scores (probabilities that each step is correct).
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
