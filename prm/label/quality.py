"""Label quality: how labelers that graded the same solutions agree with human labels, with each
other, what consensus keeps, and what a labeled solution costs.

Every labeler is reduced to its *first error* per solution (0-based index of the first step it
judges wrong, -1 when it finds none, None when it gave no grade: a failed paid request). Human
labels use the same convention (CHAMP's first-wrong-step annotations, ProcessBench's ``label``).

- `human_agreement`: exact first-error match, "error vs no error" agreement, and ProcessBench's
  acc_error / acc_correct / F1 (`prm.eval.processbench.processbench_metrics`, fed with 0/1 step
  scores that put the first score below 0.5 at the labeler's first error, so the one metrics code
  decides) over the solutions both graded, and step-level metrics (`prm.eval.metrics.step_metrics`)
  of the steps the human labels judge (up to the first error).
- `pairwise_agreement`: the same two rates for every pair of labelers (and ``human``), as tables.
- `consensus_shares`: for every subset of two or more labelers, the share of solutions where all
  name the same first error (`prm.label.verify.consensus`'s keep rule), and how often the kept
  label equals the human one.
- `labeler_cost`: per labeled solution, rollouts and generated tokens (Monte-Carlo ``Grade.stats``),
  API requests, tokens and USD (a paid verifier's ``api_usage``), and wall seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from prm.eval.metrics import step_metrics
from prm.eval.processbench import processbench_metrics
from prm.label.labels import first_error_labels
from prm.label.verify import VerifierOptions, make_verifier
from prm.label.verify.base import Grade, Item, Verifier, first_error
from prm.schema import make_record

HUMAN = "human"
LABELERS = ("rules", "reference", "claude", "mc", "mc-linear", "mc-binary")  # mc: the search of VerifierOptions.mc_search


def make_labelers(names: Sequence[str], options: VerifierOptions) -> dict[str, Verifier]:
    """The named labelers built from one set of options; ``mc-linear`` / ``mc-binary`` fix the
    Monte-Carlo search (``mc`` takes ``options.mc_search``) and share one rollout cache, so the
    binary search reuses the linear scan's rollouts instead of sampling them again."""
    from prm.label.verify import RolloutCache

    unknown = [n for n in names if n not in LABELERS]
    if unknown:
        raise ValueError(f"unknown labeler(s) {', '.join(unknown)}; known: {', '.join(LABELERS)}")
    if any(n.startswith("mc") for n in names) and options.rollout_cache is None and options.completer is not None:
        gen = getattr(options.completer, "__self__", None)
        options.rollout_cache = RolloutCache(options.rollout_cache_path, gen.settings() if hasattr(gen, "settings") else None,
                                             getattr(gen, "count_tokens", None))
    out = {}
    for n in names:
        base, _, search = n.partition("-")
        out[n] = make_verifier(base, options, **({"mc_search": search} if search else {}))
    return out


def labeled_records(records: Sequence[dict], grades: Sequence[Grade | None], labeler: str) -> list[dict]:
    """The solutions with one labeler's first-error labels (`first_error_labels`: steps before its
    first error 1, it 0, later steps unlabeled), as stepwise records a PRM trains on; ungraded
    solutions and solutions left without a labeled step are dropped. ``meta.meta_label`` is the
    final answer checked against the gold one (where the answer was read): the same for every
    labeler, so solution-level metrics of PRMs trained on different labelers share one truth."""
    out = []
    for r, g in zip(records, grades):
        if g is None:
            continue
        labels = first_error_labels(g.step_correct)
        if all(x is None for x in labels):
            continue
        meta: dict = {"labeler": labeler}
        if g.solution_correct is not None:
            meta["meta_label"] = float(g.solution_correct)
        out.append(make_record(r["prompt"], r["completions"], labels, "binary", answer=r.get("answer"), id=r["id"],
                               source=r.get("source"), meta=meta))
    return out


def consensus_records(records: Sequence[dict], grades: Mapping[str, Sequence[Grade | None]]) -> list[dict]:
    """The solutions on which every labeler graded and named the same first error (the consensus
    filter), with that first error's labels."""
    names = list(grades)
    kept = [i for i in range(len(records))
            if all(grades[n][i] is not None for n in names) and len({first_error_index(grades[n][i]) for n in names}) == 1]
    first = grades[names[0]]
    return labeled_records([records[i] for i in kept], [first[i] for i in kept], "consensus(" + ",".join(names) + ")")


def grade_all(labelers: Mapping[str, Verifier], items: Sequence[Item]) -> tuple[dict[str, list[Grade | None]], dict[str, float]]:
    """Every labeler's grades of the same ``items`` (input order) and its wall seconds."""
    grades, seconds = {}, {}
    for name, v in labelers.items():
        t0 = time.perf_counter()
        grades[name] = v.grade_many(items, desc=f"grading [{name}]")
        seconds[name] = time.perf_counter() - t0
    return grades, seconds


def first_error_index(grade: Grade | None) -> int | None:
    """A grade's first error: 0-based step, -1 for none, None when there is no grade."""
    if grade is None:
        return None
    k = first_error(grade.step_correct)
    return -1 if k is None else k


def first_error_scores(first: int, n_steps: int) -> list[float]:
    """0/1 step scores whose first score below 0.5 is step ``first`` (-1: none), so a labeler's first
    error can be scored as a PRM's by `processbench_metrics` at threshold 0.5."""
    return [0.0 if k == first else 1.0 for k in range(n_steps)]


def _rates(a: Sequence[int | None], b: Sequence[int | None]) -> dict:
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not both:
        return {"n": 0, "exact": None, "error_vs_no_error": None}
    return {"n": len(both), "exact": sum(x == y for x, y in both) / len(both),
            "error_vs_no_error": sum((x == -1) == (y == -1) for x, y in both) / len(both)}


def human_agreement(pred: Sequence[int | None], human: Sequence[int | None], n_steps: Sequence[int],
                    subsets: Sequence[str] | None = None) -> dict:
    """Agreement of one labeler's first errors with human ones, over solutions both have:
    ``exact`` match rate, ``error_vs_no_error`` agreement, and ProcessBench's acc_error,
    acc_correct and F1 (per subset and averaged), with the human label as the truth."""
    idx = [i for i, (p, h) in enumerate(zip(pred, human)) if p is not None and h is not None]
    out = _rates([pred[i] for i in idx], [human[i] for i in idx])
    if idx:
        subs = [subsets[i] if subsets else "all" for i in idx]
        pb = processbench_metrics([int(human[i]) for i in idx], [first_error_scores(int(pred[i]), n_steps[i]) for i in idx], subs, 0.5)  # type: ignore[arg-type]
        out.update(processbench_f1=pb["average_f1"], processbench_subsets=pb["subsets"])
        out["predicted_error_share"] = sum(pred[i] != -1 for i in idx) / len(idx)
        # step level: the human first-error labels (steps before it right, it wrong, later ones unlabeled)
        # against the labeler's (a step at or after its first error predicted wrong)
        labels, probs = [], []
        for i in idx:
            h, p = int(human[i]), int(pred[i])  # type: ignore[arg-type]
            for k in range(n_steps[i] if h == -1 else h + 1):
                labels.append(1.0 if k != h else 0.0)
                probs.append(0.0 if p != -1 and k >= p else 1.0)
        out["steps"] = step_metrics(labels, np.asarray(probs), "binary")
    return out


def pairwise_agreement(firsts: Mapping[str, Sequence[int | None]]) -> dict:
    """``exact`` and ``error_vs_no_error`` tables {a: {b: rate}} over every pair of labelers (the
    diagonal is 1.0 where a labeler graded anything), and ``n`` (solutions both graded)."""
    names = list(firsts)
    tables: dict[str, dict[str, dict[str, float | None]]] = {"exact": {}, "error_vs_no_error": {}, "n": {}}
    for a in names:
        for t in tables.values():
            t[a] = {}
        for b in names:
            r = _rates(firsts[a], firsts[b])
            tables["exact"][a][b] = r["exact"]
            tables["error_vs_no_error"][a][b] = r["error_vs_no_error"]
            tables["n"][a][b] = r["n"]
    return {"labelers": names, **tables}


def consensus_shares(firsts: Mapping[str, Sequence[int | None]], human: Sequence[int | None] | None = None) -> list[dict]:
    """For every subset of two or more labelers: solutions all of them graded, the share kept (all
    name the same first error, or all none) and, where human labels exist, how often a kept label
    equals the human one (``kept_human_exact``) next to the first member's rate on the same
    solutions without filtering."""
    names = [n for n in firsts if n != HUMAN]
    out = []
    for r in range(2, len(names) + 1):
        for group in combinations(names, r):
            idx = [i for i in range(len(firsts[group[0]])) if all(firsts[g][i] is not None for g in group)]
            kept = [i for i in idx if len({firsts[g][i] for g in group}) == 1]
            row: dict = {"labelers": list(group), "graded": len(idx), "kept": len(kept), "kept_share": len(kept) / len(idx) if idx else None}
            if human is not None:
                kh = [i for i in kept if human[i] is not None]
                row["kept_with_human"] = len(kh)
                row["kept_human_exact"] = sum(firsts[group[0]][i] == human[i] for i in kh) / len(kh) if kh else None
            out.append(row)
    return out


def rollout_cost(stats: Sequence[Mapping]) -> dict:
    """Monte-Carlo rollouts and generated tokens per solution from grades' ``stats`` (0 for a
    labeler that samples nothing; tokens None where the generator could not count them)."""
    n = max(len(stats), 1)
    toks = [s.get("tokens", 0) for s in stats]
    return {"rollouts_per_solution": sum(s.get("rollouts", 0) for s in stats) / n,
            "generated_tokens_per_solution": None if any(t is None for t in toks) else sum(toks) / n}


def labeler_cost(grades: Sequence[Grade | None], api_usage: Mapping | None = None, seconds: float | None = None) -> dict:
    """Cost per labeled solution: Monte-Carlo rollouts and generated tokens (``Grade.stats``; 0 for a
    labeler that samples nothing, None where the generator could not count tokens), API requests,
    input/output/cache tokens and USD (``api_usage`` of a paid verifier), and wall seconds."""
    done = [g for g in grades if g is not None]
    n = len(done)
    out: dict = {"solutions": n, "ungraded": len(grades) - n}
    if not n:
        return out
    out.update(rollout_cost([g.stats or {} for g in done]))
    u = api_usage or {}
    api_in = u.get("input_tokens", 0) + u.get("cache_read_tokens", 0) + u.get("cache_write_tokens", 0)
    out.update(api_requests_per_solution=u.get("requests", 0) / n, api_input_tokens_per_solution=api_in / n,
               api_output_tokens_per_solution=u.get("output_tokens", 0) / n,
               api_cache_read_tokens_per_solution=u.get("cache_read_tokens", 0) / n)
    usd = u.get("cost_usd", 0.0) if u else 0.0
    out["usd_per_solution"] = None if usd is None else usd / n
    out["usd_per_1000_solutions"] = None if usd is None else 1000 * usd / n
    if u:
        out["api_model"] = u.get("model")
        out["api_cached_answers"] = u.get("cached", 0)  # answered from the on-disk cache: no request, no cost this run
    if seconds is not None:
        out["seconds_per_solution"] = seconds / n
    return out


def answer_summary(grades: Sequence[Grade | None]) -> dict:
    """How often a labeler could read the solution's final answer (a labeler that judges only
    arithmetic and the final answer says "no error" whenever it cannot), and judged it right."""
    done = [g for g in grades if g is not None]
    read = [g.solution_correct for g in done if g.solution_correct is not None]
    return {"answer_read_share": len(read) / len(done) if done else None, "answer_correct_share": sum(read) / len(read) if read else None}


def quality_report(firsts: Mapping[str, Sequence[int | None]], n_steps: Sequence[int], human: Sequence[int | None] | None = None,
                   subsets: Sequence[str] | None = None, costs: Mapping[str, dict] | None = None,
                   extra: Mapping[str, dict] | None = None) -> dict:
    """The whole report (metrics.json): per labeler its agreement with human labels, its cost and
    ``extra`` (e.g. `answer_summary`), the pairwise tables (``human`` included where it exists),
    the consensus kept shares, and two constant baselines against the human labels (always "no
    error", always "the first step") that a labeler has to beat."""
    has_human = human is not None and any(h is not None for h in human)
    per = {}
    for name, pred in firsts.items():
        row: dict = {"graded": sum(p is not None for p in pred),
                     "no_error_share": (sum(p == -1 for p in pred) / max(1, sum(p is not None for p in pred)))}
        if has_human:
            row["human"] = human_agreement(pred, human, n_steps, subsets)  # type: ignore[arg-type]
        if costs and name in costs:
            row["cost"] = costs[name]
        if extra and name in extra:
            row.update(extra[name])
        per[name] = row
    table_of = {**firsts, HUMAN: human} if has_human else dict(firsts)
    out: dict = {"solutions": len(n_steps), "labelers": list(firsts), "per_labeler": per,
                 "pairwise": pairwise_agreement(table_of),  # type: ignore[arg-type]
                 "consensus": consensus_shares(firsts, human if has_human else None)}
    if has_human:
        hs = [h for h in human if h is not None]  # type: ignore[union-attr]
        out["human"] = {"solutions": len(hs), "no_error_share": sum(h == -1 for h in hs) / len(hs)}
        out["baselines"] = {name: human_agreement([k] * len(n_steps), human, n_steps, subsets)  # type: ignore[arg-type]
                            for name, k in (("always_no_error", -1), ("always_first_step", 0))}
    return out
