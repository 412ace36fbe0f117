"""The Monte-Carlo (Math-Shepherd) verifier: a step is judged by where it leads.

From the prefix ending at step k, the generator writes ``num_completions`` continuations; the
share of them that reach the gold answer estimates how good the prefix is. The step's verdict comes
from the ``hard`` estimate (correct if ANY continuation reaches the answer, Math-Shepherd's hard
label) or the ``soft`` one (correct if at least half do); both estimates are kept in the graded
data. The last step needs no rollouts: its prefix is the whole solution, judged by its own final
answer. Cost: ``num_completions x (steps - 1)`` generations per solution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prm.answers import answers_equal, extract_answer, is_correct
from prm.label.labels import mc_hard, mc_soft
from prm.label.progress import progress
from prm.label.verify.base import Grade, Item, VerifierBase

Completer = Callable[[list[str], list[str], int], list[list[str]]]  # (problems, prefixes, n) -> n continuations each


class MCVerifier(VerifierBase):
    """Grades by Monte-Carlo rollouts from each step prefix (see the module docstring)."""

    name = "mc"

    def __init__(self, completer: Completer, num_completions: int = 4, label: str = "hard", chunk: int = 8):
        if label not in ("hard", "soft"):
            raise ValueError(f"mc label must be 'hard' or 'soft', not {label!r}")
        if num_completions < 1:
            raise ValueError("num_completions must be at least 1")
        self.complete, self.n, self.label, self.chunk = completer, num_completions, label, chunk

    def grade_many(self, items: Sequence[Item], desc: str = "MC rollouts") -> list[Grade | None]:
        """Grade (problem, steps, gold) items, ``chunk`` solutions at a time: all prefixes of a chunk
        go to the completer at once (so a local model batches them); the bar counts solutions."""
        out: list[Grade | None] = []
        with progress(len(items), desc) as bar:
            for b in range(0, len(items), self.chunk):
                out += self._grade_chunk(items[b : b + self.chunk])
                bar.update(len(items[b : b + self.chunk]))
        return out

    def _grade_chunk(self, items: Sequence[Item]) -> list[Grade | None]:
        jobs = [(i, k) for i, (_, steps, _) in enumerate(items) for k in range(1, len(steps))]
        outs = self.complete([items[i][0] for i, _ in jobs], ["\n".join(items[i][1][:k]) for i, k in jobs], self.n) if jobs else []
        hits: dict[tuple[int, int], list[bool]] = {}
        for (i, k), conts in zip(jobs, outs):
            gold, prefix = items[i][2], "\n".join(items[i][1][:k])
            hits[(i, k)] = [is_correct(prefix + "\n" + c, gold) is True for c in conts]
        grades: list[Grade | None] = []
        for i, (_, steps, gold) in enumerate(items):
            answer = extract_answer("\n".join(steps))
            solution_ok = None if answer is None else answers_equal(answer, gold)
            soft, hard, verdicts, details = [], [], [], []
            for k in range(1, len(steps) + 1):
                h = hits.get((i, k), [bool(solution_ok)])  # the last prefix is the solution itself
                soft.append(mc_soft(h))
                hard.append(mc_hard(h))
                verdicts.append(bool(hard[-1]) if self.label == "hard" else soft[-1] >= 0.5)
                details.append([f"mc {sum(h)}/{len(h)} continuations reach the answer"])
            grades.append(Grade(verdicts, solution_ok, details, {"mc_soft": soft, "mc_hard": hard}))
        return grades
