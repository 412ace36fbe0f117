"""Monte-Carlo first-error search: OmegaPRM's binary search vs the linear (Math-Shepherd) scan.

Protocol, in one run on the same solutions:

1. Mining (`prm.label.pipeline.mine`, as `exp/prm_exp.py` mines): the generator writes
   ``mine_samples`` solutions to each of the first ``problems`` arithmetic word problems, prompted
   with worked examples written one fact per line (`LONG_EXAMPLES`) so that its solutions have 6 or
   more steps. Problems it solves at least ``min_solve`` of the time are kept (rollouts from their
   prefixes are informative: a good prefix often reaches the answer).
2. Their mining samples with at least ``min_steps`` steps are the labeled solutions.
3. Both searches label them with ``n`` rollouts per prefix through one `RolloutCache`: the linear
   scan first (it samples every prefix), then the binary search, which finds every rollout it needs
   in the cache, so the two see the same rollouts for every prefix they both roll out and differ only
   in which prefixes they look at. Cost is counted per search as the rollouts (and tokens) it uses,
   whether they were sampled or read from the cache.

Reported: rollouts and tokens per labeled solution for each search and their ratio (all solutions,
and wrong-answer solutions, the only ones the binary search rolls out), and the disagreement rate:
the share of solutions whose first-error index differs (both searches decide one for every solution:
a step index or "no error").
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from prm.answers import is_correct
from prm.label.pipeline import MiningConfig, mine
from prm.label.verify import MCVerifier, RolloutCache
from prm.steps import split_steps

from .common import machine

# Project-written worked examples, one fact or computation per line: SmolLM2 imitates the layout and
# writes 6-10 step solutions to the one-step arithmetic problems (it rarely solves the two-step ones).
LONG_EXAMPLES = (
    ("Mia has 7 boxes with 3 pens in each box. How many pens does Mia have?",
     "Mia has 7 boxes.\nEach box has 3 pens.\nWe need the total number of pens.\nWe multiply the number of boxes by the pens in each box.\n"
     "So Mia has 7 * 3 pens.\n7 * 3 = 21.\nMia has 21 pens.\nThe answer is: 21"),
    ("Leo has 12 marbles. He finds 9 more marbles. How many marbles does Leo have now?",
     "Leo has 12 marbles.\nHe finds 9 more marbles.\nWe need the number of marbles now.\nWe add the marbles he finds to the marbles he had.\n"
     "So Leo has 12 + 9 marbles.\n12 + 9 = 21.\nLeo has 21 marbles now.\nThe answer is: 21"),
)


def _stats(values: Sequence[float]) -> dict:
    v = list(values)
    return {"mean": statistics.fmean(v) if v else None, "median": statistics.median(v) if v else None,
            "min": min(v) if v else None, "max": max(v) if v else None, "total": sum(v), "n": len(v)}


def _ratio(a: dict, b: dict) -> float | None:
    return a["total"] / b["total"] if b["total"] else None


def mc_search_benchmark(gen, problems: Sequence[dict], work: Path, n: int = 4, mine_samples: int = 4, min_solve: float = 0.25,
                        min_steps: int = 6, max_solutions: int | None = None, step_words: int | None = None) -> dict:
    """``gen``: a generator with ``generate``/``complete`` (LocalGenerator); ``problems``: stepwise
    problem records (``id``, ``prompt``, ``answer``). Steps are lines, or runs of ``step_words`` words
    (the smoke run: a random tiny model writes no line breaks)."""
    load_before = os.getloadavg()
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    for f in ("mining.jsonl", "rollouts.jsonl"):  # a fresh measurement each run
        (work / f).unlink(missing_ok=True)
    cfg = MiningConfig(mine_samples=mine_samples, solve_low=min_solve, solve_high=1.0, num_samples=len(problems))
    kept = mine(problems, gen.generate, cfg, work / "mining.jsonl", batch=max(1, 16 // mine_samples))
    mining_s = time.time() - t0
    solve = {k["id"]: k["solve_rate"] for k in kept}
    items, ids = [], []
    for k in kept:
        for j, text in enumerate(k["samples"]):
            words = text.split()
            steps = split_steps(text, "lines") if not step_words else [" ".join(words[i : i + step_words]) for i in range(0, len(words), step_words)]
            if len(steps) >= min_steps:
                items.append((k["prompt"], steps, k["answer"]))
                ids.append(f"{k['id']}#{j}")
    items, ids = items[:max_solutions], ids[:max_solutions]
    if not items:
        raise SystemExit(f"mc_search: no solution with >= {min_steps} steps on problems solved >= {min_solve:.0%} of the time; "
                         "raise --problems or lower --min_solve")
    settings = {"model": getattr(gen.model, "name_or_path", ""), "temperature": gen.temperature, "max_new_tokens": gen.max_new_tokens, "seed": gen.seed}
    cache = RolloutCache(work / "rollouts.jsonl", settings, gen.count_tokens)
    t1 = time.time()
    lin = MCVerifier(gen.complete, n, search="linear", cache=cache).grade_many(items, desc="linear")
    linear_s, sampled_linear = time.time() - t1, cache.sampled
    t2 = time.time()
    bin_ = MCVerifier(gen.complete, n, search="binary", cache=cache).grade_many(items, desc="binary")
    binary_s = time.time() - t2
    rows = []
    for sid, (_, steps, gold), a, b in zip(ids, items, lin, bin_):
        rows.append({"id": sid, "steps": len(steps), "answer_right": bool(is_correct("\n".join(steps), gold)),
                     "linear": {k: a.stats[k] for k in ("rollouts", "tokens", "first_error")},
                     "binary": {k: b.stats[k] for k in ("rollouts", "tokens", "first_error")}})

    def side(sel: list[dict]) -> dict:
        out = {}
        for s in ("linear", "binary"):
            out[s] = {"rollouts": _stats([r[s]["rollouts"] for r in sel]), "tokens": _stats([r[s]["tokens"] or 0 for r in sel])}
        out["rollout_ratio_linear_over_binary"] = _ratio(out["linear"]["rollouts"], out["binary"]["rollouts"])
        out["token_ratio_linear_over_binary"] = _ratio(out["linear"]["tokens"], out["binary"]["tokens"])
        dis = [r for r in sel if r["linear"]["first_error"] != r["binary"]["first_error"]]
        out["solutions"] = len(sel)
        out["disagreements"] = len(dis)
        out["disagreement_rate"] = len(dis) / len(sel) if sel else None
        return out

    wrong = [r for r in rows if not r["answer_right"]]
    res = {
        "protocol": __doc__.split("\n\n")[1].strip() if __doc__ else "",
        "n_rollouts_per_prefix": n, "min_steps": min_steps, "min_solve": min_solve, "mine_samples": mine_samples,
        "problems_examined": len(problems), "problems_kept": len(kept),
        "solve_rate_of_kept_problems": _stats(list(solve.values())),
        "kept_problems": [{"id": k["id"], "solve_rate": solve[k["id"]], "prompt": k["prompt"]} for k in kept],
        "solutions": len(rows), "steps": _stats([r["steps"] for r in rows]),
        "answer_right_share": sum(r["answer_right"] for r in rows) / len(rows),
        "all": side(rows), "wrong_answer": side(wrong),
        "sampled": {"linear": sampled_linear, "binary_new": cache.sampled - sampled_linear},
        "seconds": {"mining": round(mining_s, 1), "linear": round(linear_s, 1), "binary": round(binary_s, 1)},
        "per_solution": rows,
        "machine": machine(), "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    return res
