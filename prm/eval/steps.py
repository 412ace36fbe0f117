"""Evaluate a PRM on stepwise records: step metrics, and solution accuracy of aggregated scores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from prm.eval.aggregate import aggregate
from prm.eval.metrics import bootstrap_auroc, step_metrics


def solution_label(rec: dict) -> float | None:
    """1 if the solution is correct, 0 if not, None if unknown: ``meta.meta_label`` when given,
    else 0 when any step is labeled wrong, 1 when every step is labeled correct."""
    meta = rec.get("meta") or {}
    if meta.get("meta_label") is not None:
        return float(meta["meta_label"] >= 0.5)
    labs = rec["labels"]
    wrong = 0.0 if rec["label_scheme"] == "ternary" else None
    if any(v is not None and ((v == 0.0) if wrong is not None else v < 0.5) for v in labs):
        return 0.0
    if labs and all(v is not None for v in labs):
        ok = all(v == 2.0 for v in labs) if rec["label_scheme"] == "ternary" else all(v >= 0.5 for v in labs)
        return 1.0 if ok else None
    return None


def score_items(prm: Any, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 16, desc: str = "scoring",
                unit: str = "solution") -> list[list[float]]:
    """``prm.score_batch(items)`` with one progress bar for the whole stage, counting solutions:
    chunks of 8 batches keep the length-sorted batching inside score_batch effective while the bar
    still moves."""
    out: list[list[float]] = []
    with tqdm(total=len(items), desc=desc, unit=unit) as bar:
        for b in range(0, len(items), batch_size * 8):
            chunk = items[b : b + batch_size * 8]
            out += prm.score_batch(chunk, batch_size=batch_size)
            bar.update(len(chunk))
    return out


def score_records(prm: Any, records: Iterable[dict], batch_size: int = 16, desc: str = "scoring") -> list[dict]:
    """Records with ``step_scores`` (P(correct) per kept step) added."""
    recs = list(records)
    scores = score_items(prm, [(r["prompt"], r["completions"]) for r in recs], batch_size, desc)
    return [{**r, "step_scores": s} for r, s in zip(recs, scores)]


def evaluate_steps(prm: Any, records: Iterable[dict], batch_size: int = 16, aggregators: Iterable[str] = ("min", "prod"),
                   seed: int = 0) -> tuple[dict, list[dict]]:
    """Step metrics over labeled steps, plus solution-level accuracy/AUROC of each aggregator; each
    AUROC comes with ``auroc_by_problem``, its bootstrap 95% interval resampling whole problems (the
    steps and solutions of one problem are not independent; ``seed`` seeds the resampling)."""
    scored = score_records(prm, records, batch_size)
    scheme = prm.spec.label_scheme
    y, p, problems = [], [], []
    for r in scored:
        for lab, s in zip(r["labels"], r["step_scores"]):
            if lab is not None:
                y.append(lab)
                p.append(s)
                problems.append(r["prompt"])
    # P(correct) only: build two-class probabilities so binary/soft metrics apply; ternary reads
    # correctness as "positive vs rest".
    probs = np.stack([1 - np.asarray(p), np.asarray(p)], axis=1) if p else np.zeros((0, 2))
    y_eval = y if scheme != "ternary" else [1.0 if v == 2.0 else 0.0 for v in y]
    metrics = {"steps": step_metrics(y_eval, probs, "binary" if scheme == "ternary" else scheme)}
    metrics["steps"]["auroc_by_problem"] = bootstrap_auroc(y_eval, p, problems, seed=seed) if p else None
    sol = [(solution_label(r), r["step_scores"], r["prompt"]) for r in scored]
    sol = [(lab, s, q) for lab, s, q in sol if lab is not None and s]
    metrics["solutions"] = {"n": len(sol)}
    for agg in aggregators:
        if sol:
            yy = [lab for lab, _, _ in sol]
            pp = [aggregate(s, agg) for _, s, _ in sol]
            metrics["solutions"][agg] = step_metrics(yy, np.asarray(pp), "binary")
            metrics["solutions"][agg]["auroc_by_problem"] = bootstrap_auroc(yy, pp, [q for _, _, q in sol], seed=seed)
    return metrics, scored
