"""The offline PRM study: data, PRMs and evaluation that rerun on a 2-core CPU without internet.

    export PRM_DATA_DIR=../shared/data          # GSM8K train/test copies
    python exp/offline_study.py                 # every stage (about 90 minutes on 2 cores)
    python exp/offline_study.py --stages table  # only rewrite the results table from metrics.json
    python exp/offline_study.py --config exp/configs/offline_study/tiny.yaml   # seconds-to-minutes smoke run

Stages (each resumes: finished runs and data files are reused):
  data   GSM8K train: reference solutions (every step right) and a copy of each with one injected
         error (steps before it 1, the changed step 0, later steps unlabeled; prm/data/inject.py);
         SmolLM2 solutions to other GSM8K train problems graded step by step by the rules verifier
         (first-error labels: real model mistakes); held-out: the same construction on GSM8K test;
         best-of-N sets on GSM8K test: the reference solution plus N-1 SmolLM2 solutions per
         problem, shuffled (correct = final answer equals the gold one); those SmolLM2 solutions
         graded by rules are a second held-out set, of real model mistakes.
  train  PRM variants (rows of the table):
           trl_recipe        MiniLM, the recipe of the baseline to beat: references of which half have
                             one injected error (later steps labeled wrong), 1 epoch, lr 5e-5, batch 16
           balanced          MiniLM, every reference AND its injected copy, 2 epochs, lr 1e-4
           balanced_sampled  balanced + the rules-graded SmolLM2 solutions
           sampled_upweighted  balanced_sampled with each SmolLM2 solution --sampled_repeat times
                             (600 real-mistake solutions are otherwise 7% of 8,600 records)
           smollm2_lora      SmolLM2-135M + LoRA on --lora_limit records drawn at random from
                             balanced_sampled (seeded shuffle), 1 epoch, lr 2e-4, batch 16
  eval   step metrics on the held-out SmolLM2 solutions; CHAMP first-wrong-step annotations as a
         ProcessBench task (threshold chosen on a 30% dev split of problems; F1 at 0.5 too);
         best-of-N accuracy vs N.
  table  results/offline_study/README.md and the README's results table, from metrics.json only.

Outputs: data/offline_study/ (gitignored), results/offline_study/<run>/ (committed, models gitignored).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exp.evaluate import EvalConfig
from exp.evaluate import main as evaluate
from exp.train_prm import TrainPRMConfig
from exp.train_prm import main as train_prm
from prm.config import parse
from prm.data import load, resolve_path
from prm.io import REPO_ROOT, read_jsonl, write_jsonl
from prm.label.pipeline import graded_records, sampled_graded
from prm.results import find_runs, load_run
from prm.study import bon_candidates, results_table
from prm.train import PRMTrainingArguments

log = logging.getLogger("offline_study")
EXP = "offline_study"


@dataclass
class StudyConfig:
    stages: str = field(default="data,train,eval,table", metadata={"help": "Comma-separated stages: data, train, eval, table."})
    variants: str = field(default="trl_recipe,balanced,balanced_sampled,sampled_upweighted,smollm2_lora", metadata={"help": "PRM variants to train and evaluate."})
    train_problems: int = field(default=4000, metadata={"help": "GSM8K train problems for reference + injected-error data."})
    sampled_problems: int = field(default=300, metadata={"help": "Other GSM8K train problems that SmolLM2 solves (graded by rules)."})
    samples_per_problem: int = field(default=2, metadata={"help": "SmolLM2 solutions per sampled problem."})
    heldout_problems: int = field(default=500, metadata={"help": "GSM8K test problems for held-out step metrics."})
    bon_problems: int = field(default=80, metadata={"help": "GSM8K test problems with best-of-N candidate sets."})
    bon_n: int = field(default=8, metadata={"help": "Candidates per best-of-N set (1 reference + N-1 SmolLM2)."})
    max_new_tokens: int = field(default=160, metadata={"help": "SmolLM2 tokens per solution."})
    lora_limit: int = field(default=2000, metadata={"help": "Training records for the SmolLM2 + LoRA variant."})
    champ_limit: int | None = field(default=None, metadata={"help": "Use at most this many CHAMP solutions (default: all 540)."})
    sampled_repeat: int = field(default=5, metadata={"help": "Copies of each SmolLM2 solution in the sampled_upweighted variant's data."})
    epochs_scale: float = field(default=1.0, metadata={"help": "Multiply every variant's epochs (smoke runs use less)."})
    seed: int = field(default=0, metadata={"help": "Seed for data order, sampling and training."})
    work_dir: str = field(default="data/offline_study", metadata={"help": "Data files of the study (gitignored)."})
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})


def build_data(cfg: StudyConfig, work: Path) -> None:
    # --- references + one injected error each (two records per problem: "-ref" and "-err")
    train_path = resolve_path("$PRM_DATA_DIR/gsm8k/train.jsonl")
    # limit counts records: two per problem (the reference and its injected-error copy)
    # every reference ends with "The answer is: N", as SmolLM2's solutions do: without it the closing
    # step is seen only in SmolLM2's (mostly wrong) solutions and the PRM learns to distrust it
    inj = load("gsm8k_errors", train_path, limit=2 * cfg.train_problems, answer_step=True)
    by_problem: dict[str, list[dict]] = {}
    for r in inj:
        by_problem.setdefault(r["id"].rsplit("-", 1)[0], []).append(r)
    problems = list(by_problem.values())
    write_jsonl(work / "balanced.jsonl", [r for rs in problems for r in rs])
    # the baseline's data: half the problems as clean references, the other half with their error
    # and, as in that run, every step after the error labeled wrong
    half = len(problems) // 2
    after_wrong = [dict(rs[-1], labels=[0.0 if lab is None else lab for lab in rs[-1]["labels"]]) for rs in problems[half:]]
    write_jsonl(work / "trl_recipe.jsonl", [rs[0] for rs in problems[:half]] + after_wrong)
    write_jsonl(work / "heldout.jsonl", list(load("gsm8k_errors", resolve_path("$PRM_DATA_DIR/gsm8k/test.jsonl"), limit=2 * cfg.heldout_problems,
                                                  answer_step=True)))

    # --- SmolLM2's own solutions to other train problems, graded by exact arithmetic
    from prm.label.generate import LocalGenerator

    # bf16 weights and batches of 32: 2x the solutions/s of fp32 batches of 8 on a 2-core CPU
    gen = LocalGenerator("smollm2", max_new_tokens=cfg.max_new_tokens, batch_size=32, seed=cfg.seed, dtype=torch.bfloat16)
    plain = load("gsm8k", train_path, strip_calculator=True)
    others = plain.select(range(cfg.train_problems, min(len(plain), cfg.train_problems + cfg.sampled_problems)))
    graded = sampled_graded(list(others), gen.generate, cfg.samples_per_problem, work / "sampled")
    sampled = graded_records(graded)
    write_jsonl(work / "sampled.jsonl", sampled)
    wrong = sum(0.0 in r["labels"] for r in sampled)
    log.info("SmolLM2: %d solutions, %d with a wrong step, %d with the right answer", len(sampled), wrong,
             sum(bool(r["meta"]["solution_correct"]) for r in sampled))

    # --- best-of-N sets on test problems
    test = list(load("gsm8k", resolve_path("$PRM_DATA_DIR/gsm8k/test.jsonl"), strip_calculator=True, limit=cfg.bon_problems))
    rows = sampled_graded(test, gen.generate, cfg.bon_n - 1, work / "bon")
    samples: dict[str, list[str]] = {}
    for row in read_jsonl(work / "bon" / "solutions.jsonl"):
        samples[row["id"]] = row["solutions"]
    write_jsonl(work / "bon_candidates.jsonl", bon_candidates(test, samples, cfg.bon_n, cfg.seed))
    # the same model solutions, graded by rules: held-out steps with real (not injected) mistakes
    write_jsonl(work / "heldout_sampled.jsonl", graded_records(rows))
    log.info("best-of-N: %d problems x %d candidates (%d model solutions graded)", len(test), cfg.bon_n, len(rows))


def write_mixes(cfg: StudyConfig, work: Path) -> None:
    """The mixed variants' data, derived from the data stage's files (cheap, rewritten every run):
    references and injected copies plus every SmolLM2 solution once (balanced_sampled) or
    ``sampled_repeat`` times (sampled_upweighted)."""
    balanced, sampled = read_jsonl(work / "balanced.jsonl"), read_jsonl(work / "sampled.jsonl")
    write_jsonl(work / "balanced_sampled.jsonl", balanced + sampled)
    write_jsonl(work / "sampled_upweighted.jsonl", balanced + sampled * cfg.sampled_repeat)


VARIANTS = {
    # name: (data file, backbone, LoRA, epochs, learning rate, batch size)
    "trl_recipe": ("trl_recipe.jsonl", "minilm", False, 1, 5e-5, 16),
    "balanced": ("balanced.jsonl", "minilm", False, 2, 1e-4, 32),
    "balanced_sampled": ("balanced_sampled.jsonl", "minilm", False, 2, 1e-4, 32),
    "sampled_upweighted": ("sampled_upweighted.jsonl", "minilm", False, 2, 1e-4, 32),
    "smollm2_lora": ("balanced_sampled.jsonl", "smollm2", True, 1, 2e-4, 16),
}


def run_done(name: str, cfg: StudyConfig) -> bool:
    return (Path(cfg.results_dir) / EXP / name / "metrics.json").is_file()


def train_variant(name: str, cfg: StudyConfig, work: Path) -> None:
    data, model, lora, epochs, lr, bs = VARIANTS[name]
    tcfg = TrainPRMConfig(data=str(work / data), format="stepwise", eval_data=str(work / "heldout.jsonl"), model=model, lora=lora,
                          limit=cfg.lora_limit if lora else None, results_dir=cfg.results_dir, experiment=EXP)
    args = PRMTrainingArguments(output_dir=str(Path(cfg.results_dir) / EXP / name / "checkpoints"), run_name=name,
                                num_train_epochs=epochs * cfg.epochs_scale, learning_rate=lr, per_device_train_batch_size=bs,
                                per_device_eval_batch_size=32, warmup_steps=20, bf16=True, max_length=256, max_prompt_length=128,
                                eval_strategy="no", save_strategy="no", logging_steps=25, seed=cfg.seed, report_to=[])
    train_prm(tcfg, args)


def evaluate_variant(name: str, cfg: StudyConfig, work: Path) -> None:
    model = str(Path(cfg.results_dir) / EXP / name / "model")
    common = dict(model=model, results_dir=cfg.results_dir, experiment=EXP, seed=cfg.seed)
    if not run_done(f"{name}__champ", cfg):
        evaluate(EvalConfig(task="processbench", format="champ_fws", dev_fraction=0.3, limit=cfg.champ_limit, run_name=f"{name}__champ", **common))
    if not run_done(f"{name}__sampled", cfg):
        evaluate(EvalConfig(task="steps", data=str(work / "heldout_sampled.jsonl"), format="stepwise", run_name=f"{name}__sampled", **common))
    if not run_done(f"{name}__bon", cfg):
        ns = ",".join(str(n) for n in sorted({n for n in (1, 2, 4, 8, 16, 32) if n < cfg.bon_n} | {cfg.bon_n}))
        evaluate(EvalConfig(task="best_of_n", data=str(work / "bon_candidates.jsonl"), ns=ns, aggregators="min,prod,last",
                            run_name=f"{name}__bon", **common))


def write_table(cfg: StudyConfig) -> str:
    root = Path(cfg.results_dir) / EXP
    trained = [r.path.name for r in find_runs(root.parent, EXP) if "__" not in r.path.name]
    order = [v for v in VARIANTS if v in trained] + sorted(set(trained) - set(VARIANTS))

    def opt(name: str):
        return load_run(root / name) if (root / name / "metrics.json").is_file() else None

    table = results_table([(v, opt(v), opt(f"{v}__sampled"), opt(f"{v}__champ"), opt(f"{v}__bon")) for v in order])
    (root / "README.md").write_text("# results/offline_study/\n\nWritten by `python exp/offline_study.py --stages table` from the "
                                    "runs' metrics.json files.\n\n" + table + "\n")
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- offline-study-table:start -->", "<!-- offline-study-table:end -->"
    if start in text and Path(cfg.results_dir).resolve() == (REPO_ROOT / "results").resolve():
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{table}\n{end}", text, flags=re.DOTALL)
        readme.write_text(text)
    return table


def main(cfg: StudyConfig) -> str:
    # --- setup
    stages = {s.strip() for s in cfg.stages.split(",") if s.strip()}
    unknown = stages - {"data", "train", "eval", "table"}
    variants = [v.strip() for v in cfg.variants.split(",") if v.strip()]
    if unknown or not set(variants) <= set(VARIANTS):
        raise SystemExit(f"error: unknown stage(s) {sorted(unknown)} or variant(s) {sorted(set(variants) - set(VARIANTS))}; "
                         f"stages: data, train, eval, table; variants: {', '.join(VARIANTS)}")
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    # --- data
    if "data" in stages:
        if not (work / "bon_candidates.jsonl").is_file():
            build_data(cfg, work)
        write_mixes(cfg, work)
    # --- train and evaluate each PRM variant
    for name in variants:
        if "train" in stages and not run_done(name, cfg):
            train_variant(name, cfg, work)
        if "eval" in stages:
            evaluate_variant(name, cfg, work)
    # --- the table
    table = write_table(cfg) if "table" in stages else ""
    print(table)
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(*parse(StudyConfig, description=__doc__.split("\n")[0]))
