"""One progress bar per labelling stage.

A stage (mining, generation, grading, Monte-Carlo rollouts) is made of many calls (one generation
call per chunk of questions, one Claude request per solution, ...). Every piece of work opens its bar
with `progress`; only the outermost one is shown:

- no bar open: a new tqdm bar (with rate and ETA) is shown;
- a bar with the same unit is open: updates go to it (generation inside the mining stage counts
  solutions into the mining bar);
- a bar with another unit is open: the inner bar is hidden (Monte-Carlo continuations inside a
  stage that counts graded solutions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tqdm.auto import tqdm

_OPEN: ContextVar[tuple[Any, str] | None] = ContextVar("prm_label_progress", default=None)


class _Forward:
    """Counts into the open bar of the same unit."""

    def __init__(self, bar: Any):
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, **kw: Any) -> None:
        self._bar.set_postfix(**kw)


class _Hidden:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass


@contextmanager
def progress(total: int, desc: str, unit: str = "solution") -> Iterator[Any]:
    """A bar with ``update(n)`` for ``total`` units of work (see the module docstring)."""
    outer = _OPEN.get()
    if outer is not None:
        bar, outer_unit = outer
        yield _Forward(bar) if outer_unit == unit else _Hidden()
        return
    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    token = _OPEN.set((bar, unit))
    try:
        yield bar
    finally:
        _OPEN.reset(token)
        bar.close()
