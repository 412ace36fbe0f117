"""Label quality report: several labelers grade the same solutions; their first errors are compared
with human labels and with each other, with the kept share under consensus and the cost per
labeled solution (`prm.label.quality`).

    # CHAMP's human first-wrong-step annotations (packaged), the offline labelers (seconds)
    python exp/label_quality.py --config exp/configs/label_quality/champ_offline.yaml
    # add Claude (paid: the estimate is printed and confirmed first; --yes, --max_cost_usd caps it)
    python exp/label_quality.py --labelers rules reference claude --limit 50 --run_name champ_claude --yes
    # Monte-Carlo labelers with SmolLM2 rollouts (linear scan and binary search share one rollout cache) on
    # SmolLM2's own solutions to problems it solves 30-80% of the time (recipe: exp/configs/label_quality/README.md)
    python exp/label_quality.py --config exp/configs/label_quality/smollm2_mc.yaml
    # then the figure (agreement heat map + cost per solution)
    python exp/make_figures.py --only label_quality

Labelers: rules, reference (the reference solution's chain of quantities: CHAMP's own worked
solutions from the packaged ``champ`` format, or --references), claude (only when ANTHROPIC_API_KEY
is set or ANTHROPIC_BASE_URL points at a server), mc (--mc_search), mc-linear, mc-binary.
Writes results/label_quality/<run_name>/{config.json, metrics.json, predictions.jsonl} and, for the
paid and sampling labelers, cache/ there (Claude's answers, the rollouts; gitignored).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prm.config import ConfigError, RunArgs, at_least, check_model, require, resolve_data, run, settings, split_list
from prm.data import load
from prm.io import RunDir, writable, write_jsonl
from prm.label.claude import BudgetExceeded, confirm_spend, load_dotenv_key
from prm.label.quality import (
    LABELERS,
    answer_summary,
    consensus_records,
    first_error_index,
    grade_all,
    labeled_records,
    labeler_cost,
    make_labelers,
    quality_report,
)
from prm.label.verify import VerifierOptions

log = logging.getLogger("label_quality")


@dataclass
class LabelQualityConfig:
    data: str | None = field(default=None, metadata={"help": "Solutions to grade (default: the packaged CHAMP annotations)."})
    format: str = field(default="champ_fws", metadata={"help": "Format of --data; human first errors come from meta.label or binary labels."})
    limit: int | None = field(default=None, metadata={"help": "Grade at most this many solutions."})
    labelers: list[str] = field(default_factory=lambda: ["rules", "reference"], metadata={"help": f"Labelers to compare: {', '.join(LABELERS)}."})
    references: str | None = field(default=None, metadata={"help": "reference: file of reference solutions (default: packaged CHAMP's when --format champ_fws)."})
    references_format: str = field(default="champ", metadata={"help": "Format of --references (its records' steps are the reference solutions)."})
    uncheckable: str = field(default="correct", metadata={"help": "rules/reference: verdict of a step with no checkable computation.",
                                                          "choices": ["correct", "previous", "unlabeled"]})
    claude_model: str = field(default="claude-sonnet-4-6", metadata={"help": "claude: grading model id."})
    max_concurrency: int = field(default=8, metadata={"help": "claude: parallel requests."})
    max_cost_usd: float | None = field(default=None, metadata={"help": "claude: stop cleanly once this much was spent."})
    yes: bool = field(default=False, metadata={"help": "claude: go ahead with paid requests after printing the estimate."})
    mc_model: str = field(default="smollm2", metadata={"help": "mc: rollout generator (embedded name, folder or hub id)."})
    mc_completions: int = field(default=4, metadata={"help": "mc: continuations per step prefix."})
    mc_label: str = field(default="hard", metadata={"help": "mc: hard (any continuation) or soft (half of them).", "choices": ["hard", "soft"]})
    mc_search: str = field(default="linear", metadata={"help": "mc: linear or binary (mc-linear / mc-binary fix it).", "choices": ["linear", "binary"]})
    max_new_tokens: int = field(default=96, metadata={"help": "mc: token limit of a rollout."})
    temperature: float = field(default=0.7, metadata={"help": "mc: sampling temperature."})
    gen_batch_size: int = field(default=8, metadata={"help": "mc: rollouts per generator batch."})
    labels_dir: str | None = field(default=None, metadata={"help": "Also write each labeler's first-error labels as stepwise records "
                                                                  "<labels_dir>/<labeler>.jsonl, and the solutions all agree on as "
                                                                  "consensus.jsonl (training data of the closed loop)."})

    def __post_init__(self) -> None:
        self.labelers = split_list(self.labelers)
        unknown = [x for x in self.labelers if x not in LABELERS]
        require(bool(self.labelers) and not unknown, "labelers", f"unknown {unknown}; known: {', '.join(LABELERS)}")
        require(len(set(self.labelers)) == len(self.labelers), "labelers", f"lists a labeler twice: {self.labelers}")
        at_least(self, ("limit", "max_concurrency", "mc_completions", "max_new_tokens", "gen_batch_size"))
        require(self.max_cost_usd is None or self.max_cost_usd >= 0, "max_cost_usd", f"must be >= 0, got {self.max_cost_usd}")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        if any(x.startswith("mc") for x in self.labelers):
            check_model(self.mc_model, "mc_model")
        if "claude" in self.labelers and not (load_dotenv_key() or os.environ.get("ANTHROPIC_BASE_URL")):
            raise ConfigError("--labelers claude needs ANTHROPIC_API_KEY (environment or .env) or ANTHROPIC_BASE_URL pointing at a server")


TYPES = (RunArgs, LabelQualityConfig)


def human_first_error(rec: dict) -> int | None:
    """The human first error of a record: ``meta.label`` (CHAMP, ProcessBench), else the first 0 of
    its binary labels (-1: none); None when the record has no step labels."""
    meta = rec.get("meta") or {}
    if isinstance(meta.get("label"), int):
        return meta["label"]
    labels = rec.get("labels") or []
    if not labels or all(x is None for x in labels):
        return None
    return next((k for k, x in enumerate(labels) if x is not None and x < 0.5), -1)


def main(ra: RunArgs, cfg: LabelQualityConfig) -> dict:
    # --- setup: the run directory belongs to these settings
    run_dir = RunDir.claim(ra.run_dir("label_quality", "default"), settings(ra, cfg), seed=ra.seed, overwrite=ra.overwrite)
    paths = {"data": resolve_data(cfg.data, "data"), "references": resolve_data(cfg.references, "references")}
    if cfg.labels_dir:
        writable(Path(cfg.labels_dir), "labels_dir")
    if ra.dry_run:
        log.info("dry run: settings valid, %s; would write %s", paths, run_dir.path)
        return {"dry_run": True, **paths, "run_dir": str(run_dir.path)}

    # --- data: the solutions, their human first errors, the reference solutions
    recs = load(cfg.format, paths["data"], limit=cfg.limit)
    if not len(recs):
        raise ConfigError(f"--data {cfg.data}: no solutions")
    items = [(r["prompt"], list(r["completions"]), r.get("answer")) for r in recs]
    human = [human_first_error(r) for r in recs]
    refs = None
    if "reference" in cfg.labelers:
        if paths["references"] is not None or cfg.format == "champ_fws":
            refs = {r["prompt"]: r["completions"] for r in load(cfg.references_format, paths["references"]) if r["completions"]}
        n_ref = sum(p in (refs or {}) for p, _, _ in items)
        log.info("reference solutions for %d of %d solutions", n_ref, len(items))

    # --- labelers (the generator for mc). Claude's answers and the rollouts are cached in the run's cache/
    # folder (not committed): a rerun pays and samples nothing twice
    run_dir.begin()
    completer = None
    if any(x.startswith("mc") for x in cfg.labelers):
        from prm.label.generate import make_generator

        gen = make_generator(cfg.mc_model, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, batch_size=cfg.gen_batch_size, seed=ra.seed)
        completer = gen.complete
    api_key = None if load_dotenv_key() else "local"  # a local server at ANTHROPIC_BASE_URL needs no real key
    job = dict(max_concurrency=cfg.max_concurrency, max_cost_usd=cfg.max_cost_usd, confirm=lambda est: confirm_spend(est, cfg.yes, "grading"),
               base_url=os.environ.get("ANTHROPIC_BASE_URL"), **({"api_key": api_key} if api_key else {}))
    opts = VerifierOptions(uncheckable=cfg.uncheckable, model=cfg.claude_model, cache_path=run_dir.path / "cache" / "claude_answers.jsonl", job=job,
                           completer=completer, num_completions=cfg.mc_completions, mc_label=cfg.mc_label, mc_search=cfg.mc_search,
                           rollout_cache_path=run_dir.path / "cache" / "rollouts.jsonl", references=refs)
    labelers = make_labelers(cfg.labelers, opts)

    # --- grade, compare, cost
    try:
        grades, seconds = grade_all(labelers, items)
    except BudgetExceeded as e:
        raise SystemExit(f"stopped: {e}") from None
    firsts = {n: [first_error_index(g) for g in gs] for n, gs in grades.items()}
    costs = {n: labeler_cost(grades[n], labelers[n].api_usage(), seconds[n]) for n in cfg.labelers}
    n_steps = [len(s) for _, s, _ in items]
    subsets = [str((r.get("meta") or {}).get("generator") or r.get("source") or "all") for r in recs]
    metrics = quality_report(firsts, n_steps, human, subsets, costs, {n: answer_summary(gs) for n, gs in grades.items()})
    metrics["data"] = {"format": cfg.format, "solutions": len(items), "with_human_label": sum(h is not None for h in human),
                       "with_reference": None if refs is None else sum(p in refs for p, _, _ in items)}
    metrics["note"] = "first errors are 0-based steps, -1 = no error; seconds are wall time on the machine that ran it"

    # --- save
    preds = [{"id": r["id"], "n_steps": n, "human": h, "first_errors": {k: firsts[k][i] for k in firsts},
              "verdicts": {k: (None if grades[k][i] is None else grades[k][i].step_correct) for k in grades},
              "stats": {k: grades[k][i].stats for k in grades if grades[k][i] is not None and grades[k][i].stats}}
             for i, (r, n, h) in enumerate(zip(recs, n_steps, human))]
    write_jsonl(run_dir.path / "predictions.jsonl", preds)
    if cfg.labels_dir:  # outside results/: the records hold the problems' text
        for n in cfg.labelers:
            write_jsonl(Path(cfg.labels_dir) / f"{n}.jsonl", labeled_records(recs, grades[n], n))
        if len(cfg.labelers) > 1:
            write_jsonl(Path(cfg.labels_dir) / "consensus.jsonl", consensus_records(recs, grades))
        log.info("labels of each labeler under %s", cfg.labels_dir)
    run_dir.finish(metrics)
    log.info("wrote %s", run_dir.path)
    print(json.dumps({n: {"human": m.get("human", {}).get("exact"), "error_vs_no_error": m.get("human", {}).get("error_vs_no_error")}
                      for n, m in metrics["per_labeler"].items()}, indent=1))
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
