"""Consensus filtering (Qwen's PRM recipe, "The Lessons of Developing Process Reward Models in
Mathematical Reasoning", 2025): grade every solution with two or more labelers and keep it only when
they agree on where its first error is.

Each solution's first error under a labeler is its first step judged wrong (None: no step is).
A solution is *kept* when every labeler names the same first error, or every labeler finds none;
its verdicts are then first-error verdicts (the steps before it correct, it wrong, the steps after
it without a verdict; a step no labeler judged stays None). Otherwise it is *dropped*: every verdict
is None (no training label), and the reason is recorded: ``error vs no error`` (some labelers find
an error, others none) or ``different first error`` (all find one, at different steps).

Every labeler's own verdicts travel with the grade (`Grade.members`, the ``verdicts`` field of
graded.jsonl), so agreement tables and another combination rule need no regrading; a rerun with
other members regrades from the members' own caches (Claude's answer cache, the Monte-Carlo rollout
cache), so nothing is paid or sampled twice. `consensus_summary` turns graded rows into the kept
share, the reasons for dropping and the pairwise agreement of the labelers (metrics.json).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations

from prm.label.progress import progress
from prm.label.verify.base import Grade, Item, Verifier, VerifierBase, first_error

DIFFERENT, NO_ERROR_DISPUTE = "different first error", "error vs no error"


class ConsensusVerifier(VerifierBase):
    """Keeps a solution's verdicts only where all ``members`` agree on its first error (see the module docstring)."""

    name = "consensus"

    def __init__(self, members: Mapping[str, Verifier]):
        if len(members) < 2:
            raise ValueError(f"consensus needs at least two labelers, got {', '.join(members) or 'none'}")
        self.members = dict(members)
        self.labeler_id = "consensus(" + ",".join(getattr(v, "labeler_id", n) for n, v in self.members.items()) + ")"

    def grade_many(self, items: Sequence[Item], desc: str = "grading") -> list[Grade | None]:
        """Every member grades all items (each member's bar counts into this one)."""
        with progress(len(items) * len(self.members), desc):
            per = {name: v.grade_many(items, desc=f"{desc} [{name}]") for name, v in self.members.items()}
        return [self._combine([per[n][j] for n in self.members], len(items[j][1])) for j in range(len(items))]

    def _combine(self, grades: list[Grade | None], n_steps: int) -> Grade | None:
        if any(g is None for g in grades):
            return None  # a member could not grade it this time (a failed paid request): a rerun asks again
        names = list(self.members)
        firsts = {n: first_error(g.step_correct) for n, g in zip(names, grades)}  # type: ignore[union-attr]
        members = {}
        for n, g in zip(names, grades):
            m = {"step_correct": g.step_correct, "solution_correct": g.solution_correct, "first_error": firsts[n]}  # type: ignore[union-attr]
            if g.estimates:  # type: ignore[union-attr]
                m["estimates"] = g.estimates  # type: ignore[union-attr]
            if g.stats:  # type: ignore[union-attr]
                m["stats"] = g.stats  # type: ignore[union-attr]
            members[n] = m
        solution_ok = next((g.solution_correct for g in grades if g.solution_correct is not None), None)  # type: ignore[union-attr]
        said = ", ".join(f"{n}: {'no error' if f is None else f'step {f + 1}'}" for n, f in firsts.items())
        if len(set(firsts.values())) > 1:
            reason = NO_ERROR_DISPUTE if None in firsts.values() else DIFFERENT
            return Grade([None] * n_steps, solution_ok, [[f"dropped ({reason}): {said}"]] * n_steps,
                         stats={"kept": False, "reason": reason, "first_errors": firsts}, members=members)
        k = next(iter(firsts.values()))
        verdicts: list[bool | None] = []
        for s in range(n_steps):
            if k is not None and s >= k:
                verdicts.append(False if s == k else None)
            else:  # before the agreed first error: correct, unless no labeler judged the step
                verdicts.append(True if any(g.step_correct[s] is not None for g in grades) else None)  # type: ignore[union-attr]
        return Grade(verdicts, solution_ok, [[f"kept: {said}"]] * n_steps, stats={"kept": True, "reason": None, "first_errors": firsts},
                     members=members)

    def api_usage(self) -> dict | None:
        """The paid labeler's usage (the shape every verifier reports, with its ``labeler``); by
        labeler when several are paid; None when none is."""
        used = {n: u for n, v in self.members.items() if (u := v.api_usage()) is not None}
        if len(used) == 1:
            n, u = next(iter(used.items()))
            return {**u, "labeler": n}
        return used or None


def consensus_summary(rows: Sequence[dict], max_listed: int = 200) -> dict:
    """Kept share, reasons for dropping and pairwise first-error agreement of graded rows written
    by a consensus run (rows carrying ``verdicts`` by labeler); the first ``max_listed`` dropped
    solutions are listed with what each labeler said (graded.jsonl has them all)."""
    rows = [r for r in rows if r.get("verdicts")]
    if not rows:
        return {"solutions": 0}
    names = list(rows[0]["verdicts"])
    firsts = [{n: r["verdicts"][n]["first_error"] for n in names} for r in rows]
    kept = [len(set(f.values())) == 1 for f in firsts]
    dropped = [(r, f) for r, f, k in zip(rows, firsts, kept) if not k]
    reasons = Counter(NO_ERROR_DISPUTE if None in f.values() else DIFFERENT for _, f in dropped)
    pairs = {f"{a}~{b}": sum(f[a] == f[b] for f in firsts) / len(rows) for a, b in combinations(names, 2)}
    return {"labelers": names, "solutions": len(rows), "kept": sum(kept), "agreement_rate": sum(kept) / len(rows),
            "dropped": len(dropped), "dropped_by_reason": dict(reasons), "pairwise_first_error_agreement": pairs,
            "no_error_share": {n: sum(f[n] is None for f in firsts) / len(rows) for n in names},
            "dropped_solutions": [{"id": r.get("id"), "reason": NO_ERROR_DISPUTE if None in f.values() else DIFFERENT,
                                   "first_errors": {n: (None if v is None else v + 1) for n, v in f.items()}} for r, f in dropped[:max_listed]]}
