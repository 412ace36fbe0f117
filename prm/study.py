"""Building blocks of the offline study (`exp/offline_study.py`): best-of-N candidate sets and the
README results table written from metrics.json files (never typed in). Its graded model solutions
come from `prm.label.pipeline` (`sampled_graded`, `graded_records`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from prm.results import Run
from prm.steps import answer_step


def bon_candidates(problems: Sequence[dict], samples: dict[str, list[str]], n: int, seed: int = 0) -> list[dict]:
    """Best-of-N sets: per problem its reference solution plus ``n - 1`` model-written solutions,
    in a seeded random order (so "the first N" of every N is a fair draw). Correctness is decided
    later by the final answer (`prm.eval.bon.load_candidates`)."""
    out = []
    for i, p in enumerate(problems):
        # the reference's last step states the answer, as the model's solutions (and, in the study,
        # the training references) do
        cands: list[dict[str, Any]] = [{"steps": list(p["completions"]) + [answer_step(p["answer"])], "origin": "reference"}]
        cands += [{"text": t, "origin": "model"} for t in samples.get(p["id"], [])[: n - 1]]
        random.Random(f"{seed}-{i}").shuffle(cands)
        out.append({"id": p["id"], "problem": p["prompt"], "answer": p["answer"], "candidates": cands})
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def results_table(runs: Sequence[tuple[str, Run | None, Run | None, Run | None, Run | None]]) -> str:
    """Markdown table of the study: one row per PRM (name, its training run, its step metrics on
    held-out model solutions, its CHAMP ProcessBench run, its best-of-N run); every number comes
    from a metrics.json."""
    lines = ["| PRM | held-out step AUROC (injected) | held-out F1 (wrong steps, injected) | held-out step AUROC (SmolLM2) "
             "| held-out F1 (wrong steps, SmolLM2) | CHAMP first-error F1 (dev threshold) | CHAMP F1 at 0.5 "
             "| best-of-N: PRM (min) | best-of-N: majority | N |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, train, sampled, pb, bon in runs:
        s = train.metrics.get("steps", {}) if train else {}
        m = sampled.metrics.get("steps", {}) if sampled else {}
        t = pb.metrics.get("test", {}) if pb else {}
        at_half = pb.metrics.get("test_at_0.5", {}) if pb else {}
        acc, n_max = {}, None
        if bon:  # accuracy at the largest N
            n_max = max(bon.metrics.get("ns", [0]))
            for meth, rows in bon.metrics.get("methods", {}).items():
                acc[meth] = next((r["accuracy"] for r in rows if r["n"] == n_max), None)
        lines.append(f"| {name} | {_fmt(s.get('auroc'))} | {_fmt(s.get('incorrect_f1'))} | {_fmt(m.get('auroc'))} | {_fmt(m.get('incorrect_f1'))} "
                     f"| {_fmt(t.get('average_f1'))}{' (t=' + _fmt(t.get('threshold'), 2) + ')' if t else ''} | {_fmt(at_half.get('average_f1'))} "
                     f"| {_fmt(acc.get('prm_min'))} | {_fmt(acc.get('majority'))} | {n_max or '–'} |")
    return "\n".join(lines)
