"""Step labels from verdicts: HE/SE step rewards, Monte-Carlo estimates and first-error labels.

HE and SE are the two step rewards of the original prm_exp.py, kept exactly:

- HE (hard): ``r = +1.0`` if the whole solution is correct AND the step is correct, else ``-1.0``.
- SE (soft): with ``p = step_position / total_steps`` and **1-based** ``step_position``
  (the first step has p = 1/n, the last p = 1): a correct step gets ``0.5 + 0.5 p`` and a wrong
  step ``-0.5 - 0.5 p``. 1-based so that the final step of a solution carries the full +-1 that HE
  gives it, and the reward grows in magnitude along the solution; the first step gets
  +-(0.5 + 0.5/n). SE does not look at the solution's final answer (as in the original).

A reward r in [-1, 1] becomes a soft training label with ``reward_to_label(r) = (r + 1) / 2``.

Monte-Carlo (Math-Shepherd) estimates judge a step prefix by the rollouts from it; first-error
labels (ProcessBench, PRM800K phase 2, injected errors) keep only what is certain about a solution:
the steps before its first mistake and the mistake itself.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def first_error_labels(verdicts: Sequence[bool | None]) -> list[float | None]:
    """Binary labels up to the first wrong step: 1 for the steps before it, 0 for it, None after it
    (what follows a mistake is neither cleanly right nor wrong). A step without a verdict (None)
    gets None. A first-error index ``k`` is the verdicts ``[True] * k + [False]`` padded with None;
    no error at all is all True."""
    out: list[float | None] = []
    wrong_seen = False
    for v in verdicts:
        if wrong_seen or v is None:
            out.append(None)
        elif v:
            out.append(1.0)
        else:
            out.append(0.0)
            wrong_seen = True
    return out
