"""The verifier contract: what every step verifier (rules, Claude judge, Monte-Carlo) returns and
offers, so callers grade through one interface and never ask what kind of verifier they hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Item = tuple[str, Sequence[str], "str | None"]  # (problem, steps, gold final answer)


@dataclass
class Grade:
    """A verifier's verdict on one solution."""

    step_correct: list[bool | None]
    solution_correct: bool | None  # final answer vs gold; None when no answer is stated
    details: list[list[str]] = field(default_factory=list)
    estimates: dict[str, list[float | None]] | None = None  # per-step numbers behind the verdicts (e.g. Monte-Carlo estimates)
    stats: dict | None = None  # what this grade cost and decided (Monte-Carlo: search, rollouts, tokens, first_error)
    members: dict[str, dict] | None = None  # consensus: each labeler's own verdicts (step_correct, solution_correct, ...)


def first_error(verdicts: Sequence[bool | None]) -> int | None:
    """0-based index of the first step judged wrong; None when no step is."""
    return next((k for k, v in enumerate(verdicts) if v is False), None)


class Verifier(Protocol):
    """Grades every step of solutions. Made by name with `prm.label.verify.make_verifier`."""

    name: str

    def grade_many(self, items: Sequence[Item], desc: str = "grading") -> list[Grade | None]:
        """Grades of (problem, steps, gold) items in input order, with one progress bar counting
        solutions. None: no grade this time (a paid request that errored; a rerun asks again)."""
        ...

    def grade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade | None:
        """The grade of one solution (`grade_many` of one item)."""
        ...

    def api_usage(self) -> dict | None:
        """Requests, tokens and USD spent so far (paid verifiers), else None."""
        ...


class VerifierBase:
    """What verifiers share: `grade` from `grade_many`, and no paid usage."""

    name = ""

    def grade_many(self, items: Sequence[Item], desc: str = "grading") -> list[Grade | None]:
        raise NotImplementedError

    def grade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade | None:
        return self.grade_many([(problem, steps, gold)])[0]

    def api_usage(self) -> dict | None:
        return None
