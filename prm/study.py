"""Building blocks of the offline study (`exp/offline_study.py`): model-written solutions graded by
the rules verifier with first-error labels, best-of-N candidate sets, and the README results
table written from metrics.json files (never typed in)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prm.label.pipeline import grade, rollouts
from prm.label.verify import RulesVerifier
from prm.results import Run
from prm.schema import make_record
from prm.steps import answer_step


def first_error_labels(verdicts: Sequence[bool | None]) -> list[float | None]:
    """1 for the steps before the first wrong one, 0 for it, None after it (as in the injected-error
    data and ProcessBench: what follows a mistake is neither cleanly right nor wrong)."""
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


def sampled_graded(problems: Sequence[dict], sample: Callable[[list[str], int], list[list[str]]], n: int, work: Path) -> list[dict]:
    """``n`` model solutions per problem (resumable under ``work``), each step graded by the rules
    verifier; returns the graded rows of `prm.label.pipeline.grade`."""
    kept = [{"id": p["id"], "prompt": p["prompt"], "answer": p["answer"]} for p in problems]
    sols = rollouts(kept, n, sample, work / "solutions.jsonl")
    return grade(sols, RulesVerifier(), work / "graded.jsonl")


def graded_records(graded: Sequence[dict], source: str = "smollm2_rules") -> list[dict]:
    """Binary first-error stepwise records from graded rows (rows with no labeled step dropped)."""
    out = []
    for g in graded:
        labels = first_error_labels(g["step_correct"])
        if any(lab is not None for lab in labels):
            out.append(make_record(g["prompt"], g["steps"], labels, "binary", answer=g["answer"], id=g["id"], source=source,
                                   meta={"solution_correct": g["solution_correct"]}))
    return out


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
