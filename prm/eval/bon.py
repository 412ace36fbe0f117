"""Best-of-N: pick one of N candidate solutions per problem.

Input, one JSON object per problem::

    {"problem": "...", "answer": "gold", "candidates": [{"steps": ["..."]} | {"text": "..."},
     ...], optional per candidate "correct": true/false}

Selection lives in `prm.search.select` (shared with the search strategies). Methods: ``prm_<agg>`` (the candidate with the highest aggregated PRM score), ``majority`` (the most
frequent final answer), ``weighted_<agg>`` (the answer with the largest sum of aggregated scores),
and ``oracle`` (any candidate correct). Accuracy at each N uses the first N candidates; 95%
intervals come from a bootstrap over problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prm.answers import answers_equal, extract_answer
from prm.io import iter_json_rows
from prm.schema import DataError
from prm.search.select import pick
from prm.steps import split_steps


def load_candidates(path: str | Path) -> list[dict]:
    """Read and check a best-of-N file; each candidate gets ``steps``, ``answer`` and ``correct``."""
    problems = []
    for where, row in iter_json_rows(path):
        try:
            if not isinstance(row, dict) or not isinstance(row.get("problem"), str):
                raise DataError("problem", "missing field")
            cands = row.get("candidates")
            if not isinstance(cands, list) or not cands:
                raise DataError("candidates", "expected a non-empty list")
            out = []
            for j, c in enumerate(cands):
                if not isinstance(c, dict):
                    raise DataError(f"candidates[{j}]", "expected an object")
                if isinstance(c.get("steps"), list) and c["steps"] and all(isinstance(s, str) and s.strip() for s in c["steps"]):
                    steps = c["steps"]
                elif isinstance(c.get("text"), str) and c["text"].strip():
                    steps = split_steps(c["text"])
                else:
                    raise DataError(f"candidates[{j}]", "needs non-empty 'steps' or 'text'")
                text = "\n".join(steps)
                pred = c.get("answer") if isinstance(c.get("answer"), str) else extract_answer(text)
                correct = c.get("correct")
                if correct is None:
                    correct = answers_equal(pred, row.get("answer"))
                out.append({"steps": steps, "answer": pred, "correct": bool(correct)})
        except DataError as e:
            raise e.at(where) from None
        problems.append({"problem": row["problem"], "answer": row.get("answer"), "candidates": out, "id": row.get("id", where)})
    return problems


def bootstrap_accuracy(hits: Sequence[bool], boot: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy and its bootstrap 95% interval over problems (``boot``: resampled problem indices,
    shared across methods so that their intervals come from the same resamples)."""
    h = np.asarray(hits, dtype=float)
    if boot is None:
        boot = np.random.default_rng(seed).integers(0, len(h), size=(n_boot, len(h)))
    means = h[boot].mean(axis=1)
    return {"accuracy": float(h.mean()), "ci_low": float(np.percentile(means, 2.5)), "ci_high": float(np.percentile(means, 97.5))}


def best_of_n(problems: list[dict], ns: Sequence[int], aggregators: Sequence[str] = ("min", "prod", "last"), n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy vs N per method, with bootstrap 95% intervals over problems."""
    methods = [f"prm_{a}" for a in aggregators] + ["majority"] + [f"weighted_{a}" for a in aggregators] + ["oracle"]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_problems": len(problems), "ns": list(ns), "methods": {}}
    boot = rng.integers(0, len(problems), size=(n_boot, len(problems)))
    for m in methods:
        rows = []
        for n in ns:
            hits = []
            for p in problems:
                cands = p["candidates"][:n]
                if m == "oracle":
                    hits.append(any(c["correct"] for c in cands))
                else:
                    hits.append(cands[pick(cands, m)]["correct"])
            rows.append({"n": n, **bootstrap_accuracy(hits, boot)})
        out["methods"][m] = rows
    return out
