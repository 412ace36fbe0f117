"""Evaluation: step metrics, best-of-N, ProcessBench-style first-error F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def score_steps(prm: Any, problem: str, steps: Sequence[str]) -> list[float]:
    """P(step correct) for each step of one solution, in one forward pass."""
    return prm.score_batch([(problem, steps)])[0]


def score_batch(prm: Any, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 16) -> list[list[float]]:
    """P(step correct) per step for many (problem, steps) solutions; one forward pass per solution,
    batched by length."""
    return prm.score_batch(items, batch_size=batch_size)
