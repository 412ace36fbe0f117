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
  train  PRM variants (rows of the table), each a YAML recipe in exp/configs/offline_study/variants/
         (read after _common.yaml there) for `prm.recipes.train_prm`:
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
A run counts as done only when it finished with the same settings and its artifacts exist (a
variant's model/, an evaluation's predictions); committed results without their model are trained
again (their directories hold a run without a settings fingerprint: pass --overwrite to replace them).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prm.config import ConfigError, RunArgs, at_least, load_yaml, parse, require, run, split_list
from prm.data import load, resolve_path
from prm.device import bf16_default
from prm.io import REPO_ROOT, read_jsonl, write_jsonl
from prm.label.pipeline import graded_records, sampled_graded
from prm.recipes import TRAIN_TYPES, EvalConfig, evaluate_prm, train_prm
from prm.results import find_runs, load_run
from prm.study import bon_candidates, results_table

log = logging.getLogger("offline_study")
EXP = "offline_study"
VARIANTS_DIR = REPO_ROOT / "exp" / "configs" / "offline_study" / "variants"
STAGES = ("data", "train", "eval", "table")


@dataclass
class StudyConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={"help": "Stages to run: data, train, eval, table."})
    variants: list[str] = field(default_factory=lambda: ["trl_recipe", "balanced", "balanced_sampled", "sampled_upweighted", "smollm2_lora"],
                                metadata={"help": "PRM variants to train and evaluate: recipes in exp/configs/offline_study/variants/ (a name or a YAML path)."})
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
    work_dir: str = field(default="data/offline_study", metadata={"help": "Data files of the study (gitignored)."})

    def __post_init__(self) -> None:
        self.stages = split_list(self.stages)
        self.variants = split_list(self.variants)
        bad = [s for s in self.stages if s not in STAGES]
        require(bool(self.stages) and not bad, "stages", f"unknown {bad}; known: {', '.join(STAGES)}")
        for v in self.variants:
            require(variant_path(v).is_file(), "variants", f"{v!r}: no recipe {variant_path(v)}; known: {', '.join(known_variants())}")
        at_least(self, ("train_problems", "sampled_problems", "samples_per_problem", "heldout_problems", "bon_problems", "bon_n",
                        "max_new_tokens", "lora_limit", "champ_limit", "sampled_repeat"))
        require(self.epochs_scale > 0, "epochs_scale", f"must be > 0, got {self.epochs_scale}")


def variant_path(name: str) -> Path:
    return Path(name) if name.endswith((".yaml", ".yml")) else VARIANTS_DIR / f"{name}.yaml"


def known_variants() -> list[str]:
    return sorted(p.stem for p in VARIANTS_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def variant_name(name: str) -> str:
    return Path(name).stem


def build_data(cfg: StudyConfig, ra: RunArgs, work: Path) -> None:
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

    # bf16 weights (on a CPU with bf16 instructions) and batches of 32: 2x the solutions/s of fp32
    # batches of 8 on a 2-core CPU
    gen = LocalGenerator("smollm2", max_new_tokens=cfg.max_new_tokens, batch_size=32, seed=ra.seed,
                         dtype=torch.bfloat16 if bf16_default() else torch.float32)
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
    write_jsonl(work / "bon_candidates.jsonl", bon_candidates(test, samples, cfg.bon_n, ra.seed))
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


def train_variant(name: str, cfg: StudyConfig, ra: RunArgs, work: Path) -> dict:
    """Train one variant from its recipe (after _common.yaml); data files come from ``work``.
    A finished run of the same settings whose model is there is reused."""
    recipe = variant_path(name)
    files = [VARIANTS_DIR / "_common.yaml", recipe]
    # bf16 where this machine computes it fast, unless a recipe says: on a CPU without bf16
    # instructions MiniLM's bf16 steps ran many times slower than fp32
    known = {f.name for t in TRAIN_TYPES for f in dataclasses.fields(t)}
    machine = [] if any("bf16" in load_yaml(f, known) for f in files) else ["--bf16", str(bf16_default())]
    rargs, data, model, args = parse(TRAIN_TYPES, [*machine, "--config", str(files[0]), "--config", str(recipe),
                                                    "--results_dir", ra.results_dir, "--experiment", EXP, "--run_name", variant_name(name),
                                                    "--seed", str(ra.seed)])
    data = dataclasses.replace(data, data=str(work / Path(data.data).name), eval_data=str(work / Path(data.eval_data).name),
                               limit=cfg.lora_limit if model.lora else data.limit)
    args.num_train_epochs *= cfg.epochs_scale
    rargs.overwrite, rargs.dry_run = ra.overwrite, ra.dry_run
    return train_prm(rargs, data, model, args, experiment=EXP, reuse=True)


def evaluate_variant(name: str, cfg: StudyConfig, ra: RunArgs, work: Path) -> None:
    """The variant's PRM on CHAMP (ProcessBench task), held-out SmolLM2 solutions and best-of-N sets."""
    name = variant_name(name)
    model = str(Path(ra.results_dir) / EXP / name / "model")
    ns = sorted({n for n in (1, 2, 4, 8, 16, 32) if n < cfg.bon_n} | {cfg.bon_n})
    tasks = {"champ": EvalConfig(model=model, task="processbench", format="champ_fws", dev_fraction=0.3, limit=cfg.champ_limit),
             "sampled": EvalConfig(model=model, task="steps", data=str(work / "heldout_sampled.jsonl"), format="stepwise"),
             "bon": EvalConfig(model=model, task="best_of_n", data=str(work / "bon_candidates.jsonl"), ns=ns, aggregators=["min", "prod", "last"])}
    for suffix, ecfg in tasks.items():
        era = RunArgs(results_dir=ra.results_dir, experiment=EXP, run_name=f"{name}__{suffix}", seed=ra.seed, overwrite=ra.overwrite)
        evaluate_prm(ecfg, era, experiment=EXP, reuse=True)


def write_table(cfg: StudyConfig, ra: RunArgs) -> str:
    root = Path(ra.results_dir) / EXP
    trained = [r.path.name for r in find_runs(root.parent, EXP) if "__" not in r.path.name]
    listed = [variant_name(v) for v in cfg.variants]
    order = [v for v in listed if v in trained] + sorted(set(trained) - set(listed))

    def opt(name: str):
        return load_run(root / name) if (root / name / "metrics.json").is_file() else None

    table = results_table([(v, opt(v), opt(f"{v}__sampled"), opt(f"{v}__champ"), opt(f"{v}__bon")) for v in order])
    (root / "README.md").write_text("# results/offline_study/\n\nWritten by `python exp/offline_study.py --stages table` from the "
                                    "runs' metrics.json files.\n\n" + table + "\n")
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- offline-study-table:start -->", "<!-- offline-study-table:end -->"
    if start in text and Path(ra.results_dir).resolve() == (REPO_ROOT / "results").resolve():
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{table}\n{end}", text, flags=re.DOTALL)
        readme.write_text(text)
    return table


def main(cfg: StudyConfig, ra: RunArgs) -> str:
    # --- setup
    stages = set(cfg.stages)
    work = Path(cfg.work_dir)
    if ra.dry_run:  # every recipe parses and validates; its data paths are checked when they exist
        for name in cfg.variants:
            parse(TRAIN_TYPES, ["--config", str(VARIANTS_DIR / "_common.yaml"), "--config", str(variant_path(name))])
        log.info("dry run: settings and %d variant recipes valid; stages %s", len(cfg.variants), sorted(stages))
        return ""
    if "data" in stages:
        work.mkdir(parents=True, exist_ok=True)

    # --- data
    if "data" in stages:
        if not (work / "bon_candidates.jsonl").is_file():
            build_data(cfg, ra, work)
        write_mixes(cfg, work)
    elif ("train" in stages or "eval" in stages) and not (work / "heldout.jsonl").is_file():
        raise ConfigError(f"--work_dir {work}: no study data there; run the data stage first (--stages data)")
    # --- train and evaluate each PRM variant
    for name in cfg.variants:
        if "train" in stages:
            train_variant(name, cfg, ra, work)
        if "eval" in stages:
            if not (Path(ra.results_dir) / EXP / variant_name(name) / "model").is_dir():
                raise ConfigError(f"--stages eval: variant {variant_name(name)} has no trained model under {ra.results_dir}/{EXP}; add the train stage")
            evaluate_variant(name, cfg, ra, work)
    # --- the table
    table = write_table(cfg, ra) if "table" in stages else ""
    print(table)
    return table


TYPES = (StudyConfig, RunArgs)


def cli(argv: list[str] | None = None) -> str:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
