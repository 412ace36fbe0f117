"""Recipes shared by `exp/` scripts (scripts call these, never each other): build a PRM from the
model argument group, train a PRM from a config, evaluate a PRM on a task."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm.config import (
    ConfigError,
    DataArgs,
    DeviceArgs,
    ModelArgs,
    RunArgs,
    at_least,
    check_model,
    first_line,
    fraction,
    require,
    resolve_data,
    settings,
    split_list,
)
from prm.eval.processbench import subset_of
from prm.io import RunDir, write_jsonl
from prm.models.prm import PRM, PRMSpec, apply_lora
from prm.train import PRMTrainingArguments

log = logging.getLogger(__name__)


def load_metrics(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def build_prm(model: ModelArgs, spec: PRMSpec, **kw: Any) -> PRM:
    """A PRM on ``model.model`` with a new head for ``spec``; LoRA adapters when ``model.lora``
    (on 4-bit base weights with ``model.load_in_4bit``)."""
    prm = PRM.from_backbone(model.model, spec, use_pretrained=model.use_pretrained, trust_remote_code=model.trust_remote_code,
                            load_in_4bit=model.load_in_4bit, **kw)
    if model.lora:
        apply_lora(prm, model.lora_r, model.lora_alpha, model.lora_dropout, model.target_modules)
    return prm


# --- train a PRM from a config (exp/train_prm.py, exp/math_shepherd.py, the offline study) --------


TRAIN_TYPES = (RunArgs, DataArgs, ModelArgs, PRMTrainingArguments)


def train_prm(ra: RunArgs, data: DataArgs, model: ModelArgs, args: PRMTrainingArguments, experiment: str = "train_prm",
              reuse: bool = False) -> dict:
    """Train a PRM on ``data`` and evaluate it on held-out records; writes the run directory
    ``<results_dir>/<experiment>/<run_name>/{config.json, metrics.json, log.jsonl, predictions.jsonl, model/}``.
    ``reuse``: a finished run of the same settings whose model is there is returned as it is."""
    from transformers import set_seed

    from prm.data import load, split_by_problem
    from prm.eval.steps import evaluate_steps
    from prm.train import PRMTrainer
    from prm.train.data import label_scheme_of

    # --- setup: claim the run directory (nothing written yet)
    args.run_name = ra.run_name = ra.run_name or args.run_name or "default"
    run = RunDir(ra.run_dir(experiment), settings(ra, data, model, args), seed=args.seed)
    if reuse and run.finished("model"):
        log.info("%s: finished with these settings, reused", run.path)
        return load_metrics(run.path)
    run = RunDir.claim(run.path, run.settings, seed=args.seed, overwrite=ra.overwrite)
    if args.output_dir in (None, "trainer_output"):
        args.output_dir = str(run.path / "checkpoints")
    paths = {k: data.resolved(k) for k in ("data", "eval_data")}
    if ra.dry_run:
        log.info("dry run: settings valid, data %s; would write %s", paths, run.path)
        return {"dry_run": True, "data": paths, "run_dir": str(run.path)}
    set_seed(args.seed)  # before the model exists: its new head's initialization depends on it

    # --- data
    ds = load(data.format, paths["data"], **data.format_options)
    if paths["eval_data"]:
        train, held = ds, load(data.format, paths["eval_data"], **data.format_options)
    else:
        train, held = split_by_problem(ds, data.eval_fraction, seed=args.seed)
    train = train.shuffle(seed=args.seed).select(range(min(len(train), data.limit or len(train))))
    held = held.select(range(min(len(held), data.eval_limit or len(held))))
    if not len(train) or not len(held):
        raise ConfigError(f"--data {data.data}: {len(train)} training and {len(held)} held-out records; both need at least one")
    scheme = label_scheme_of(train)
    log.info("train %d records, held-out %d, label scheme %s", len(train), len(held), scheme)

    # --- model
    prm = build_prm(model, PRMSpec(label_scheme=scheme))
    run.begin()

    # --- train
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=train, eval_dataset=held)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(run.path / "model"))

    # --- evaluate on held-out records with the saved tokenization
    metrics, scored = evaluate_steps(prm, held, batch_size=args.per_device_eval_batch_size)
    metrics["data"] = {k: v.as_dict() for k, v in trainer.encode_stats.items()}
    metrics["train"] = {k: v for k, v in trainer.state.log_history[-1].items()} if trainer.state.log_history else {}

    # --- save
    write_jsonl(run.path / "log.jsonl", trainer.state.log_history)
    write_jsonl(run.path / "predictions.jsonl", ({"id": r["id"], "labels": r["labels"], "step_scores": r["step_scores"]} for r in scored))
    run.finish(metrics)
    s = metrics["steps"]
    log.info("held-out steps: n=%d accuracy=%.3f auroc=%s f1_weighted=%.3f -> %s", s["n_steps"], s["accuracy"], s["auroc"], s["f1_weighted"], run.path)
    return metrics


# --- evaluate a PRM on a task (exp/evaluate.py, the offline study) --------------------------------

TASKS = ("processbench", "best_of_n", "steps")


@dataclass
class EvalConfig:
    model: str = field(metadata={"help": "A PRM directory saved by exp/train_prm.py, a published PRM (hub id or local copy), "
                                         "or claude:<model id> (an LLM critic with ProcessBench's critic prompt; paid, confirmed first)."})
    kind: str | None = field(default=None, metadata={"help": "PRM kind (token_cls, lm_tokens, qwen_prm, value_head, step_cls, step_embeddings); default: detected."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own modeling code (never needed for the known PRMs)."})
    task: str = field(default="processbench", metadata={"help": "processbench, best_of_n or steps.", "choices": list(TASKS)})
    data: str | None = field(default=None, metadata={"help": "Evaluation data (omit for the hub copy of Qwen/ProcessBench, or packaged CHAMP with --format champ_fws)."})
    subsets: list[str] = field(default_factory=lambda: ["gsm8k", "math", "olympiadbench", "omnimath"],
                               metadata={"help": "ProcessBench subsets when --data is omitted (hub copy)."})
    format: str = field(default="processbench", metadata={"help": "Format of --data for processbench/steps (e.g. processbench, champ_fws, stepwise)."})
    dev_data: str | None = field(default=None, metadata={"help": "ProcessBench: separate file on which the threshold is chosen."})
    dev_fraction: float | None = field(default=None, metadata={"help": "ProcessBench: hold this share of problems out of --data as the dev split for the threshold."})
    threshold: float | None = field(default=None, metadata={"help": "ProcessBench: fixed threshold (instead of choosing one on dev data)."})
    holdout_fraction: float | None = field(default=None, metadata={"help": "steps: score only the problems that a by-problem split at this share holds out "
                                                                        "(train_prm's --eval_fraction split with the same --seed): a PRM trained "
                                                                        "on the rest of the same file is scored on problems it never saw."})
    ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "Best-of-N: N values."})
    aggregators: list[str] = field(default_factory=lambda: ["min", "prod", "last"], metadata={"help": "Solution-score aggregators to report."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens per solution at inference (default: the PRM's training max_length); steps beyond it get no score."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Prompt tokens at inference (default: the PRM's training value)."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many records (processbench/steps) or problems (best_of_n)."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per forward pass."})
    critic_samples: int = field(default=1, metadata={"help": "claude:<id>: replies per solution; >1 makes step scores vote shares."})
    yes: bool = field(default=False, metadata={"help": "claude:<id>: go ahead with the paid requests after printing their estimate."})
    max_cost_usd: float | None = field(default=None, metadata={"help": "claude:<id>: stop cleanly once this much was spent (answers so far are kept)."})

    def __post_init__(self) -> None:
        from prm.models.critic import is_critic

        at_least(self, ("critic_samples",))
        require(self.max_cost_usd is None or self.max_cost_usd >= 0, "max_cost_usd", f"must be >= 0, got {self.max_cost_usd}")
        if is_critic(self.model):
            require(len(self.model) > len("claude:"), "model", "claude: needs a model id, e.g. claude:claude-sonnet-4-6")
            require(self.kind is None, "kind", "does not apply to an LLM critic (claude:<id>)")
            if self.task == "processbench" and self.threshold is None and self.dev_data is None and self.dev_fraction is None:
                # a critic's scores are its own verdicts (0/1, or vote shares): 0.5 reads them back;
                # no dev split to pay for
                self.threshold = 0.5
        else:
            check_model(self.model, "model")
        at_least(self, ("max_length", "max_prompt_length", "limit", "batch_size"))
        fraction(self, "dev_fraction")
        fraction(self, "holdout_fraction")
        require(self.holdout_fraction is None or self.task == "steps", "holdout_fraction", f"applies to --task steps only, not {self.task}")
        require(self.threshold is None or 0 <= self.threshold <= 1, "threshold", f"must be in [0, 1], got {self.threshold}")
        self.ns = [int(n) for n in split_list(self.ns)]
        require(bool(self.ns) and min(self.ns) >= 1, "ns", f"must be N values >= 1, got {self.ns}")
        self.aggregators = split_list(self.aggregators)
        from prm.eval.aggregate import AGGREGATORS
        from prm.eval.processbench import PROCESSBENCH_SUBSETS
        from prm.models.kinds import KINDS

        bad = [a for a in self.aggregators if a not in AGGREGATORS]
        require(bool(self.aggregators) and not bad, "aggregators", f"unknown {bad}; known: {', '.join(AGGREGATORS.names())}")
        require(self.kind is None or self.kind in KINDS, "kind", f"unknown PRM kind '{self.kind}'; known: {', '.join(KINDS.names())}")
        self.subsets = split_list(self.subsets)
        bad = sorted(set(self.subsets) - set(PROCESSBENCH_SUBSETS))
        require(bool(self.subsets) and not bad, "subsets", f"unknown {bad}; known: {', '.join(PROCESSBENCH_SUBSETS)}")
        hub = self.task == "processbench" and self.format == "processbench"  # the hub copy of Qwen/ProcessBench
        require(self.task == "best_of_n" or self.data is not None or self.format == "champ_fws" or hub, "data",
                f"is needed for --task {self.task} --format {self.format} (champ_fws has packaged data; processbench has the hub copy)")
        if self.task == "processbench":
            require(self.threshold is not None or self.dev_data is not None or self.dev_fraction is not None, "threshold",
                    "processbench needs --threshold, --dev_data or --dev_fraction (the threshold is never chosen on the test data)")


def _pb_inputs(scored: list[dict]) -> tuple[list[int], list[list[float]], list[str]]:
    labels = [r["meta"]["label"] for r in scored]
    subsets = [subset_of(r) for r in scored]
    return labels, [r["step_scores"] for r in scored], subsets


def _first_error_labeled(ds: Any, cfg: EvalConfig, flag: str) -> None:
    """ProcessBench scores need each record's first-error label (``meta.label``)."""
    if len(ds) and "label" not in (ds[0].get("meta") or {}):
        raise ConfigError(f"--format {cfg.format}: its records carry no first-error label (meta.label) for --task processbench; "
                          f"use --format processbench or champ_fws, or --task steps (data from --{flag})")


def _slim(r: dict, threshold: float | None = None) -> dict:
    """What a prediction row keeps: ids, labels and scores (the texts stay in the data files)."""
    from prm.eval.processbench import first_error

    out = {"id": r["id"], "source": r.get("source"), "labels": r.get("labels"), "step_scores": r["step_scores"]}
    if threshold is not None:
        out["label"] = r["meta"]["label"]
        out["predicted_first_error"] = first_error(r["step_scores"], threshold)
    return out


def _score_paid(prm: Any, items: list) -> None:
    """Score every item once up front (the answers are cached, so the scoring passes that follow
    read them): the estimate is printed and confirmed once, not per chunk."""
    from prm.label.claude import BudgetExceeded

    try:
        prm.score_batch(items)
    except BudgetExceeded as e:
        raise SystemExit(f"stopped: {e}") from None


def evaluate_prm(cfg: EvalConfig, ra: RunArgs, experiment: str = "evaluate", reuse: bool = False,
                 device_args: DeviceArgs | None = None) -> dict:
    """Score a saved PRM on a ProcessBench-style first-error task, best-of-N sets or step labels;
    writes ``<results_dir>/<experiment>/<run_name>/{config.json, metrics.json, predictions.jsonl}``.
    The settings include the fingerprint of the run that trained the PRM (when it came from one), so
    a retrained PRM is a new evaluation. ``reuse``: a finished evaluation of the same settings is
    returned as it is. ``device_args``: where the PRM runs and in which dtype (default: auto, auto)."""
    from prm.data import load, split_by_problem
    from prm.eval.bon import best_of_n, load_candidates
    from prm.eval.processbench import choose_threshold, load_processbench, processbench_metrics
    from prm.eval.steps import evaluate_steps, score_items, score_records
    from prm.models.kinds import PRMLoadError
    from prm.models.prm import load_prm

    trained_by = RunDir(Path(cfg.model).parent, {}, None).recorded().get("fingerprint")
    device_args = device_args or DeviceArgs()
    device, dtype = device_args.torch_device(), device_args.torch_dtype()  # a GPU this machine lacks shows now
    run = RunDir(ra.run_dir(experiment), settings(cfg, ra, device_args, model_trained_by=trained_by), seed=ra.seed)
    if reuse and run.finished("predictions.jsonl"):
        log.info("%s: finished with these settings, reused", run.path)
        return load_metrics(run.path)
    run = RunDir.claim(run.path, run.settings, seed=ra.seed, overwrite=ra.overwrite)
    paths = {"data": resolve_data(cfg.data, "data"), "dev_data": resolve_data(cfg.dev_data, "dev_data")}
    if ra.dry_run:
        log.info("dry run: settings valid, data %s; would write %s", paths, run.path)
        return {"dry_run": True, "data": paths, "run_dir": str(run.path)}
    # --- data first: a mistake in it shows before the model loads
    dev = None
    if cfg.task == "best_of_n":
        problems = load_candidates(paths["data"])[: cfg.limit]
    else:
        if cfg.task == "processbench":
            test = load_processbench(paths["data"], fmt=cfg.format, subsets=cfg.subsets, limit=cfg.limit)
        else:
            test = load(cfg.format, paths["data"], limit=cfg.limit)
            if cfg.holdout_fraction is not None:
                test = split_by_problem(test, cfg.holdout_fraction, seed=ra.seed)[1]
                if not len(test):
                    raise ConfigError(f"--holdout_fraction {cfg.holdout_fraction}: no problem of --data {cfg.data} is held out")
        if cfg.task == "processbench":
            _first_error_labeled(test, cfg, "data")
            if cfg.threshold is None and paths["dev_data"]:
                dev = load(cfg.format, paths["dev_data"])
                _first_error_labeled(dev, cfg, "dev_data")
            elif cfg.threshold is None:
                test, dev = split_by_problem(test, cfg.dev_fraction, seed=ra.seed)
            if dev is not None and (not len(dev) or not len(test)):
                raise ConfigError(f"--dev_fraction {cfg.dev_fraction}: {len(dev)} dev and {len(test)} test records; both need at least one (raise --limit)")

    # --- model (an LLM critic keeps its replies in the run directory: a rerun pays nothing twice)
    critic = dict(cache_path=run.path / "claude_requests.jsonl", yes=cfg.yes, max_cost_usd=cfg.max_cost_usd, samples=cfg.critic_samples)
    try:
        prm = load_prm(cfg.model, cfg.kind, cfg.trust_remote_code, torch_dtype=dtype, device=str(device), critic=critic)
    except PRMLoadError as e:  # an unknown layout or a kind that contradicts the checkpoint
        raise ConfigError(f"--model {cfg.model}: {first_line(e)}") from None
    if cfg.max_length is not None:
        prm.spec.max_length = cfg.max_length
    if cfg.max_prompt_length is not None:
        prm.spec.max_prompt_length = cfg.max_prompt_length
    aggs = cfg.aggregators
    run.begin()
    if getattr(prm, "paid", False):  # an API critic: one estimate and one confirmation for everything it will score
        _score_paid(prm, [(p["problem"], c["steps"]) for p in problems for c in p["candidates"]] if cfg.task == "best_of_n"
                    else [(r["prompt"], r["completions"]) for part in (dev, test) if part is not None for r in part])

    # --- score and measure
    if cfg.task == "best_of_n":
        flat = [(p["problem"], c["steps"]) for p in problems for c in p["candidates"]]
        scores = iter(score_items(prm, flat, cfg.batch_size, desc="scoring candidates", unit="candidate"))
        for p in problems:
            for c in p["candidates"]:
                c["step_scores"] = next(scores)
        metrics = best_of_n(problems, cfg.ns, aggs, seed=ra.seed)
        predictions = [{"id": p["id"], "candidates": [{k: c[k] for k in ("answer", "correct", "step_scores")} for c in p["candidates"]]} for p in problems]
    elif cfg.task == "steps":
        metrics, scored = evaluate_steps(prm, test, cfg.batch_size, aggs)
        predictions = [_slim(r) for r in scored]
    else:
        if dev is None:
            threshold, dev_info = cfg.threshold, {"source": "fixed"}
        else:
            dev_scored = score_records(prm, dev, cfg.batch_size, desc="scoring dev")
            threshold = choose_threshold(*_pb_inputs(dev_scored))
            dev_info = {"source": cfg.dev_data or f"{cfg.dev_fraction:.0%} of problems", "n": len(dev_scored), **processbench_metrics(*_pb_inputs(dev_scored), threshold)}
        scored = score_records(prm, test, cfg.batch_size, desc="scoring test")
        metrics = {"test": processbench_metrics(*_pb_inputs(scored), threshold), "dev": dev_info,
                   "test_at_0.5": processbench_metrics(*_pb_inputs(scored), 0.5)}  # what an untuned threshold gives
        predictions = [_slim(r, threshold) for r in scored]
        log.info("ProcessBench F1 (test, threshold %.2f chosen on dev): %.3f", threshold, metrics["test"]["average_f1"])

    if getattr(prm, "paid", False):
        metrics["api_usage"] = prm.api_usage()
    if cfg.task != "best_of_n":
        # solutions whose later steps fell beyond max_length (or a critic's reply) and were not scored
        metrics["truncated_solutions"] = sum(len(p["step_scores"]) < len(p["labels"]) for p in predictions)
    write_jsonl(run.path / "predictions.jsonl", predictions)
    run.finish(metrics)
    log.info("wrote %s", run.path)
    return metrics
