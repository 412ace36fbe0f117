"""Evaluate a saved PRM: ProcessBench-style first-error F1, best-of-N, or step metrics.

    # CHAMP first-wrong-step annotations as a ProcessBench task; threshold chosen on a dev split
    python exp/evaluate.py --model results/train_prm/minilm_gsm8k_errors/model \\
        --task processbench --format champ_fws --dev_fraction 0.3 --run_name champ_minilm
    # a published PRM on the hub copy of ProcessBench (all four subsets; kind detected, or --kind)
    python exp/evaluate.py --model Qwen/Qwen2.5-Math-PRM-7B --task processbench --threshold 0.5
    # ProcessBench files with a dev file for the threshold
    python exp/evaluate.py --model M --task processbench --data gsm8k.jsonl --dev_data math.jsonl
    # best-of-N on candidate sets ({"problem", "answer", "candidates": [...]})
    python exp/evaluate.py --model M --task best_of_n --data candidates.jsonl --ns 1,2,4,8
    # step metrics on held-out stepwise data
    python exp/evaluate.py --model M --task steps --data held_out.jsonl --format stepwise

Writes results/evaluate/<run_name>/{config.json, metrics.json, predictions.jsonl}.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prm.config import run
from prm.data import load, resolve_path, split_by_problem
from prm.eval.bon import best_of_n, load_candidates
from prm.eval.processbench import (
    PROCESSBENCH_SUBSETS,
    choose_threshold,
    first_error,
    load_processbench,
    processbench_metrics,
    subset_of,
)
from prm.eval.steps import evaluate_steps, score_records
from prm.io import start_run, write_json, write_jsonl
from prm.models.kinds import PRMLoadError
from prm.models.prm import load_prm
from prm.registry import UnknownName

log = logging.getLogger("evaluate")
TASKS = ("processbench", "best_of_n", "steps")


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "A PRM directory saved by exp/train_prm.py, or a published PRM (hub id or local copy)."})
    kind: str | None = field(default=None, metadata={"help": "PRM kind (token_cls, lm_tokens, qwen_prm, value_head); default: detected."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU, fp32 on a CPU), bf16, fp16 or fp32."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own modeling code (never needed for the known PRMs)."})
    subsets: str = field(default=",".join(PROCESSBENCH_SUBSETS), metadata={"help": "ProcessBench subsets when --data is omitted (hub copy)."})
    task: str = field(default="processbench", metadata={"help": "processbench, best_of_n or steps."})
    data: str | None = field(default=None, metadata={"help": "Evaluation data (processbench: omit for the hub copy of Qwen/ProcessBench)."})
    format: str = field(default="processbench", metadata={"help": "Format of --data for processbench/steps (e.g. processbench, champ_fws, stepwise)."})
    dev_data: str | None = field(default=None, metadata={"help": "ProcessBench: separate file on which the threshold is chosen."})
    dev_fraction: float | None = field(default=None, metadata={"help": "ProcessBench: hold this share of problems out of --data as the dev split for the threshold."})
    threshold: float | None = field(default=None, metadata={"help": "ProcessBench: fixed threshold (instead of choosing one on dev data)."})
    ns: str = field(default="1,2,4,8,16", metadata={"help": "Best-of-N: comma-separated N values."})
    aggregators: str = field(default="min,prod,last", metadata={"help": "Solution-score aggregators to report."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens per solution at inference (default: the PRM's training max_length); steps beyond it get no score."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Prompt tokens at inference (default: the PRM's training value)."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many records (processbench/steps) or problems (best_of_n)."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed for the dev split and bootstrap."})
    run_name: str = field(default="default", metadata={"help": "Run folder: results/<experiment>/<run_name>."})
    experiment: str = field(default="evaluate", metadata={"help": "Results folder: results/<experiment>/<run_name>."})
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})


def _pb_inputs(scored: list[dict]) -> tuple[list[int], list[list[float]], list[str]]:
    labels = [r["meta"]["label"] for r in scored]
    subsets = [subset_of(r) for r in scored]
    return labels, [r["step_scores"] for r in scored], subsets


def _slim(r: dict, threshold: float | None = None) -> dict:
    """What a prediction row keeps: ids, labels and scores (the texts stay in the data files)."""
    out = {"id": r["id"], "source": r.get("source"), "labels": r.get("labels"), "step_scores": r["step_scores"]}
    if threshold is not None:
        out["label"] = r["meta"]["label"]
        out["predicted_first_error"] = first_error(r["step_scores"], threshold)
    return out


def main(cfg: EvalConfig) -> dict:
    if cfg.task not in TASKS:
        raise SystemExit(f"--task must be one of {', '.join(TASKS)}")
    run_dir = start_run(Path(cfg.results_dir) / cfg.experiment / cfg.run_name, asdict(cfg), seed=cfg.seed)
    try:
        prm = load_prm(cfg.model, cfg.kind, cfg.trust_remote_code, torch_dtype=cfg.dtype, device="auto")
    except (PRMLoadError, UnknownName, FileNotFoundError) as e:
        raise SystemExit(f"error: --model {cfg.model}: {e}") from None
    if cfg.max_length:
        prm.spec.max_length = cfg.max_length
    if cfg.max_prompt_length:
        prm.spec.max_prompt_length = cfg.max_prompt_length
    aggs = [a for a in cfg.aggregators.split(",") if a]

    if cfg.task == "best_of_n":
        problems = load_candidates(resolve_path(cfg.data))[: cfg.limit]
        flat = [(p["problem"], c["steps"]) for p in problems for c in p["candidates"]]
        scores = iter(prm.score_batch(flat, batch_size=cfg.batch_size))
        for p in problems:
            for c in p["candidates"]:
                c["step_scores"] = next(scores)
        metrics = best_of_n(problems, [int(n) for n in cfg.ns.split(",")], aggs, seed=cfg.seed)
        predictions = [{"id": p["id"], "candidates": [{k: c[k] for k in ("answer", "correct", "step_scores")} for c in p["candidates"]]} for p in problems]
    elif cfg.task == "steps":
        metrics, scored = evaluate_steps(prm, load(cfg.format, resolve_path(cfg.data), limit=cfg.limit), cfg.batch_size, aggs)
        predictions = [_slim(r) for r in scored]
    else:
        test = load_processbench(resolve_path(cfg.data), fmt=cfg.format, subsets=[x for x in cfg.subsets.split(",") if x], limit=cfg.limit)
        if cfg.threshold is not None:
            threshold, dev_info = cfg.threshold, {"source": "fixed"}
        else:
            if cfg.dev_data:
                dev = load(cfg.format, resolve_path(cfg.dev_data))
            elif cfg.dev_fraction:
                test, dev = split_by_problem(test, cfg.dev_fraction, seed=cfg.seed)
            else:
                raise SystemExit("processbench needs --threshold, --dev_data or --dev_fraction (the threshold is never chosen on the test data)")
            dev_scored = score_records(prm, dev, cfg.batch_size, desc="scoring dev")
            threshold = choose_threshold(*_pb_inputs(dev_scored))
            dev_info = {"source": cfg.dev_data or f"{cfg.dev_fraction:.0%} of problems", "n": len(dev_scored), **processbench_metrics(*_pb_inputs(dev_scored), threshold)}
        scored = score_records(prm, test, cfg.batch_size, desc="scoring test")
        metrics = {"test": processbench_metrics(*_pb_inputs(scored), threshold), "dev": dev_info,
                   "test_at_0.5": processbench_metrics(*_pb_inputs(scored), 0.5)}  # what an untuned threshold gives
        predictions = [_slim(r, threshold) for r in scored]
        log.info("ProcessBench F1 (test, threshold %.2f chosen on dev): %.3f", threshold, metrics["test"]["average_f1"])

    if cfg.task != "best_of_n":
        # solutions whose later steps fell beyond max_length and were not scored
        metrics["truncated_solutions"] = sum(len(p["step_scores"]) < len(p["labels"]) for p in predictions)
    write_json(run_dir / "metrics.json", metrics)
    write_jsonl(run_dir / "predictions.jsonl", predictions)
    log.info("wrote %s", run_dir)
    print(json.dumps(metrics, indent=2)[:3000])
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(main, EvalConfig, description=__doc__.split("\n")[0])
