"""The Monte-Carlo (Math-Shepherd) verifier: a step is judged by where it leads.

From the prefix ending at step k, the generator writes ``num_completions`` continuations (rollouts);
the share of them that reach the gold answer estimates how good the prefix is. The step's verdict
comes from the ``hard`` estimate (correct if ANY continuation reaches the answer, Math-Shepherd's hard
label) or the ``soft`` one (correct if at least half do); both estimates are kept in the graded
data. The last step needs no rollouts: its prefix is the whole solution, judged by its own final
answer.

Two searches decide the verdicts (``search``):

- ``linear`` (the reference, Math-Shepherd): every prefix but the last is rolled out; every step
  gets its own estimates. Cost: ``num_completions x (steps - 1)`` rollouts per solution.
- ``binary`` (OmegaPRM, Luo et al. 2024, "Improve Mathematical Reasoning in Language Models by
  Automated Process Supervision"): the search for the first error. A solution whose final answer is
  right has none (its full prefix reaches the answer) and costs no rollout. Otherwise the empty
  prefix is taken as good and the full solution as bad, and the midpoint prefix between the last
  known-good and first known-bad one is rolled out: if it is judged correct (the ``hard``/``soft``
  rule above; OmegaPRM's rule is ``hard``, MC > 0) the first error lies after it, else at or before
  it. After about ``log2(steps)`` rounds the first error is step ``hi`` (1-based): steps before it
  are correct (assuming, as OmegaPRM does, that a prefix extending a bad prefix is bad), steps after
  it get no verdict (None), as first-error labels drop them anyway. Steps whose prefix was rolled
  out carry the same hard/soft estimates the linear search gives them; the hard estimate of a step
  decided by inference is the inferred 1/0 and its soft estimate None. Cost: ``num_completions x
  ceil(log2(steps))`` rollouts at most for a wrong solution. Where rollouts are not monotone (a
  later prefix reaching the answer after an earlier one did not) the two searches can disagree;
  `exp/bench.py mc_search` measures how often.

Rollouts go through a `RolloutCache` keyed by (problem, prefix, sampling settings), optionally on
disk: a prefix is never sampled twice (two solutions sharing a prefix, the two searches over the
same solutions, a rerun of a killed job). Every `Grade` records its cost in ``stats``: the search,
prefixes rolled out, rollouts used, tokens they generated (when the generator can count them),
rollouts newly sampled (the rest came from the cache) and the decided first-error index (0-based
step; None: no error).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prm.answers import answers_equal, extract_answer, is_correct
from prm.io import append_jsonl, read_appended
from prm.label.labels import mc_hard, mc_soft
from prm.label.progress import progress
from prm.label.verify.base import Grade, Item, VerifierBase, first_error

Completer = Callable[[list[str], list[str], int], list[list[str]]]  # (problems, prefixes, n) -> n continuations each
SEARCHES = ("linear", "binary")


class RolloutCache:
    """Continuations of step prefixes, keyed by (problem, prefix, sampling ``settings``).

    ``get`` returns the first ``n`` continuations of each prefix and samples only what is missing,
    one completer call per distinct missing count. With ``path`` every sampled batch is appended
    to a JSONL file and read back on start (a torn last line is dropped), so a rerun samples nothing
    it already has. ``count_tokens`` (text -> generated tokens) prices each continuation once, when
    it is sampled."""

    def __init__(self, path: str | Path | None = None, settings: Mapping[str, Any] | None = None,
                 count_tokens: Callable[[str], int] | None = None):
        self.path = None if path is None else Path(path)
        self.settings = json.dumps(dict(settings or {}), sort_keys=True, default=str)
        self.count_tokens = count_tokens
        self.store: dict[str, list[tuple[str, int | None]]] = {}
        self.sampled = 0  # continuations generated through this cache (not read from it)
        if self.path is not None:
            for row in read_appended(self.path):
                self.store.setdefault(row["key"], []).extend(zip(row["continuations"], row["tokens"]))

    def key(self, problem: str, prefix: str) -> str:
        return hashlib.sha256(json.dumps([self.settings, problem, prefix]).encode()).hexdigest()[:24]

    def get(self, completer: Completer, requests: Sequence[tuple[str, str]], n: int) -> tuple[list[list[tuple[str, int | None]]], list[int]]:
        """``n`` (continuation, tokens) pairs for every (problem, prefix) request, in request order,
        and how many of each were sampled by this call (a prefix asked twice counts at its first)."""
        keys = [self.key(p, x) for p, x in requests]
        have = {k: len(self.store.get(k, [])) for k in keys}
        need: dict[int, dict[str, tuple[str, str]]] = {}  # missing count -> {key: request}
        for k, req in zip(keys, requests):
            missing = n - len(self.store.get(k, []))
            if missing > 0:
                need.setdefault(missing, {})[k] = req
        for missing, todo in sorted(need.items()):
            reqs = list(todo.values())
            outs = completer([p for p, _ in reqs], [x for _, x in reqs], missing)
            for k, conts in zip(todo, outs):
                conts = list(conts)[:missing]
                toks = [self.count_tokens(c) if self.count_tokens else None for c in conts]
                self.store.setdefault(k, []).extend(zip(conts, toks))
                self.sampled += len(conts)
                if self.path is not None:
                    append_jsonl(self.path, {"key": k, "continuations": conts, "tokens": toks})
        fresh = []
        for k in keys:
            fresh.append(max(0, min(n, len(self.store[k])) - have[k]))
            have[k] = max(have[k], n)
        return [self.store[k][:n] for k in keys], fresh


class MCVerifier(VerifierBase):
    """Grades by Monte-Carlo rollouts from step prefixes (see the module docstring)."""

    name = "mc"

    def __init__(self, completer: Completer, num_completions: int = 4, label: str = "hard", chunk: int = 8,
                 search: str = "linear", cache: RolloutCache | None = None):
        if label not in ("hard", "soft"):
            raise ValueError(f"mc label must be 'hard' or 'soft', not {label!r}")
        if search not in SEARCHES:
            raise ValueError(f"mc search must be one of {', '.join(SEARCHES)}, not {search!r}")
        if num_completions < 1:
            raise ValueError("num_completions must be at least 1")
        self.complete, self.n, self.label, self.chunk, self.search = completer, num_completions, label, chunk, search
        self.cache = cache if cache is not None else RolloutCache()
        # what graded rows record as their labeler (rollouts and label rule are part of prm_exp's work dir already);
        # the linear scan keeps the plain name that rows written before the binary search carry implicitly
        self.labeler_id = "mc" if search == "linear" else f"mc-{search}"

    def grade_many(self, items: Sequence[Item], desc: str = "MC rollouts") -> list[Grade | None]:
        """Grade (problem, steps, gold) items, ``chunk`` solutions at a time: the prefixes a chunk
        needs in one round go to the completer at once (so a local model batches them); the bar
        counts solutions."""
        out: list[Grade | None] = []
        with progress(len(items), desc) as bar:
            for b in range(0, len(items), self.chunk):
                out += self._grade_chunk(items[b : b + self.chunk])
                bar.update(len(items[b : b + self.chunk]))
        return out

    def _correct(self, hits: Sequence[bool]) -> bool:
        return bool(mc_hard(hits)) if self.label == "hard" else mc_soft(hits) >= 0.5

    def _roll(self, items: Sequence[Item], jobs: Sequence[tuple[int, int]], used: dict[int, list], fresh: dict[int, int]) -> dict[tuple[int, int], list[bool]]:
        """Rollouts from prefix k of item i for every (i, k) in ``jobs``: which reach the gold answer.
        Appends each rollout's token count to ``used[i]`` and counts the newly sampled in ``fresh[i]``."""
        reqs = [(items[i][0], "\n".join(items[i][1][:k])) for i, k in jobs]
        outs, new = self.cache.get(self.complete, reqs, self.n) if jobs else ([], [])
        hits: dict[tuple[int, int], list[bool]] = {}
        for (i, k), (_, prefix), conts, f in zip(jobs, reqs, outs, new):
            hits[(i, k)] = [is_correct(prefix + "\n" + c, items[i][2]) is True for c, _ in conts]
            used[i] += [t for _, t in conts]
            fresh[i] += f
        return hits

    def _grade_chunk(self, items: Sequence[Item]) -> list[Grade | None]:
        used: dict[int, list] = {i: [] for i in range(len(items))}
        fresh = {i: 0 for i in range(len(items))}
        solution_ok = []
        for _, steps, gold in items:
            answer = extract_answer("\n".join(steps))
            solution_ok.append(None if answer is None else answers_equal(answer, gold))
        if self.search == "linear":
            hits = self._roll(items, [(i, k) for i, (_, steps, _) in enumerate(items) for k in range(1, len(steps))], used, fresh)
            first_bad = None
        else:
            hits, first_bad = self._binary(items, solution_ok, used, fresh)
        grades: list[Grade | None] = []
        for i, (_, steps, _) in enumerate(items):
            soft: list[float | None] = []
            hard: list[float | None] = []
            verdicts: list[bool | None] = []
            details: list[list[str]] = []
            for k in range(1, len(steps) + 1):
                h = [bool(solution_ok[i])] if k == len(steps) else hits.get((i, k))  # the last prefix is the solution itself
                if h is not None:
                    soft.append(mc_soft(h))
                    hard.append(mc_hard(h))
                    verdicts.append(self._correct(h))
                    details.append([f"mc {sum(h)}/{len(h)} continuations reach the answer"])
                else:  # binary search: decided by inference from the located first error, or undecided after it
                    v = None if k > first_bad[i] else k < first_bad[i]
                    soft.append(None)
                    hard.append(None if v is None else float(v))
                    verdicts.append(v)
                    details.append(["mc: no rollouts (decided by the first-error search)" if v is not None else "mc: after the first error"])
            if first_bad is not None:  # the search's own decision (a rolled-out step after it is not re-judged)
                verdicts = [None if k > first_bad[i] else k < first_bad[i] for k in range(1, len(steps) + 1)]
            first = first_error(verdicts)
            toks = used[i]
            stats = {"search": self.search, "prefixes": len(toks) // self.n, "rollouts": len(toks),
                     "tokens": None if any(t is None for t in toks) else sum(toks), "sampled": fresh[i], "first_error": first}
            grades.append(Grade(verdicts, solution_ok[i], details, {"mc_soft": soft, "mc_hard": hard}, stats=stats))
        return grades

    def _binary(self, items: Sequence[Item], solution_ok: list[bool | None], used: dict[int, list], fresh: dict[int, int]) -> tuple[dict, dict[int, float]]:
        """OmegaPRM's binary search for every wrong solution of the chunk, in lockstep (one completer
        call per round). Returns the rollout hits and, per item, the 1-based first wrong step
        (``inf`` when the solution is right)."""
        lo = {i: 0 for i in range(len(items))}  # last prefix known good (0: the empty prefix)
        hi: dict[int, float] = {i: (math.inf if solution_ok[i] else len(items[i][1])) for i in range(len(items))}
        hits: dict[tuple[int, int], list[bool]] = {}
        while True:
            jobs = [(i, (lo[i] + int(hi[i])) // 2) for i in hi if hi[i] != math.inf and hi[i] - lo[i] > 1]
            if not jobs:
                return hits, hi
            got = self._roll(items, jobs, used, fresh)
            hits.update(got)
            for (i, m) in jobs:
                if self._correct(got[(i, m)]):
                    lo[i] = m
                else:
                    hi[i] = m
