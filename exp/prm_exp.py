"""The main job: step-labeled data from an SFT model (Method 1) or Claude (Method 2), HE/SE rewards, a LoRA PRM.

The SFT model or Claude writes solutions, a verifier grades every step, the grades become HE or SE
step rewards, and a LoRA PRM is trained on them and evaluated on held-out questions.

    # offline, embedded defaults (SmolLM2 generates, the rules verifier grades, SmolLM2 + LoRA PRM)
    python exp/prm_exp.py --method 1 --reward HE
    python exp/prm_exp.py --method 1 --reward SE --skip_generation      # reuses HE's graded data
    # offline Monte-Carlo labels (Math-Shepherd): 4 continuations from every step prefix
    python exp/prm_exp.py --method 1 --reward HE --verifier mc --mc_completions 4
    # ... or OmegaPRM's binary search for the first error (fewer rollouts; rollouts are cached in the work dir)
    python exp/prm_exp.py --method 1 --reward HE --verifier mc --mc_search binary
    # offline: steps checked against the reference solution's quantities (GSM8K annotations)
    python exp/prm_exp.py --method 1 --reward HE --verifier reference
    # consensus filtering: keep a solution only where the labelers agree on its first error
    python exp/prm_exp.py --method 1 --reward HE --verifier consensus --consensus mc,rules
    # with a key in ANTHROPIC_API_KEY (or .env): Claude grades (asks before spending; --yes skips)
    python exp/prm_exp.py --method 1 --reward HE --verifier claude --max_cost_usd 5
    # Method 2: Claude writes the rollouts and grades them, through the Message Batches API (half price)
    python exp/prm_exp.py --method 2 --reward HE --batch_api --max_cost_usd 10
    # the original setup on a GPU box
    python exp/prm_exp.py --method 1 --reward HE --dataset openmathinstruct \\
        --sft_model math_tutor_model/math_sft_adapter/v2/final_checkpoint --model meta-llama/Llama-3.2-1B

Outputs:
    data/prm_exp/method{X}-<hash of the generation arguments>/{args.json, mining, solutions, graded}.jsonl
                                                                resumable work files (HE and SE share them)
    data/prm_dataset_method{X}_{HE|SE}/{train,test,prefix_layout}.jsonl
    <output_root>/math_prm_adapter/method{X}_{HE|SE}/{checkpoint-N/, final_checkpoint/, trainer_state.json}
    results/prm_exp/method{X}_{HE|SE}/{config.json, metrics.json, log.jsonl, predictions.jsonl}
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import set_seed

from prm.config import ModelArgs, RunArgs, VerifierArgs, at_least, fraction, require, resolve_data, run, settings
from prm.data import load, resolve_path
from prm.device import bf16_default, cpu_bf16_fast, wait_for_gpu
from prm.eval.steps import evaluate_steps
from prm.io import RunDir, own_dir, writable, write_json, write_jsonl
from prm.label.claude import confirm_spend
from prm.label.pipeline import (
    MiningConfig,
    grade,
    graded_rows,
    mine,
    rollouts,
    save_dataset,
    split_questions,
    to_records,
)
from prm.label.quality import rollout_cost
from prm.label.verify import VerifierOptions, consensus_summary, make_verifier, resolve_name
from prm.label.verify.claude import BudgetExceeded, load_dotenv_key
from prm.models.prm import PRMSpec
from prm.recipes import build_prm
from prm.schema import to_dataset
from prm.train import PRMTrainer, PRMTrainingArguments

log = logging.getLogger("prm_exp")


@dataclass
class PrmExpConfig:
    """What the main job generates and how it labels it. The PRM backbone and LoRA (`PrmExpModel`),
    the verifier (`VerifierArgs`), the training (`PrmExpTraining`) and the run (`RunArgs`) are the
    shared groups of `prm.config`, with the same flags as exp/train_prm.py."""

    method: int = field(default=1, metadata={"help": "1: the SFT model generates, a verifier grades. 2: Claude generates and grades.", "choices": [1, 2]})
    reward: str = field(default="HE", metadata={"help": "HE: +1 only if the step AND the whole solution are right. SE: +-(0.5 + 0.5 k/n) by step position.", "choices": ["HE", "SE"]})
    sft_model: str = field(default="smollm2", metadata={"help": "Generator for Method 1: hub id, local path, PEFT adapter dir, or the embedded 'smollm2'."})
    num_rollouts: int | None = field(default=None, metadata={"help": "Solutions per kept question (default 5; 8 with the embedded SmolLM2, whose run keeps few questions)."})
    num_samples: int = field(default=1000, metadata={"help": "Questions to keep after mistake mining."})
    skip_generation: bool = field(default=False, metadata={"help": "Use the graded data already in the work directory; generate and grade nothing."})
    mc_label: str = field(default="hard", metadata={"help": "--verifier mc: a step is correct if any (hard) or at least half (soft) of its continuations reach the answer.", "choices": ["hard", "soft"]})
    batch_api: bool = field(default=False, metadata={"help": "Send Claude requests through the Message Batches API: half price, results within 24 h (the run waits; a killed run picks its batches up again)."})
    dataset: str = field(default="auto", metadata={"help": "Problems: auto (data/arithmetic_problems.jsonl with the embedded SmolLM2, else $PRM_DATA_DIR/gsm8k/train.jsonl), gsm8k ($PRM_DATA_DIR), openmathinstruct (hub), or a file."})
    dataset_format: str = field(default="gsm8k", metadata={"help": "Format of a --dataset file (python -m prm.data --list)."})
    output_root: str = field(default=".", metadata={"help": "Where math_prm_adapter/ goes (the adapter's checkpoints: --output_dir is set from it)."})
    yes: bool = field(default=False, metadata={"help": "Do not ask before paid API work."})
    mine_samples: int = field(default=4, metadata={"help": "SFT samples per question for mistake mining (its solve rate is the share of them that reach the answer)."})
    solve_low: float = field(default=0.3, metadata={"help": "Keep questions the SFT model solves at least this often..."})
    solve_high: float = field(default=0.8, metadata={"help": "...and at most this often: questions with both right and wrong solutions."})
    max_questions: int | None = field(default=None, metadata={"help": "Examine at most this many questions while mining (default: all; 120 with the embedded SmolLM2)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Tokens per generated solution (default 256; 96 with the embedded SmolLM2)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the SFT model."})
    gen_batch_size: int | None = field(default=None, metadata={"help": "Sequences per generation batch (default 8; 32 with the embedded SmolLM2)."})
    vllm: str = field(default="auto", metadata={"help": "Generate with vLLM: auto (when installed and a GPU is present), yes, no.", "choices": ["auto", "yes", "no"]})
    test_fraction: float | None = field(default=None, metadata={"help": "Share of questions held out for evaluation (default 0.2; 0.3 with the embedded SmolLM2, whose run keeps few questions)."})
    wait_for_gpu: float = field(default=0, metadata={"help": "Minutes to wait, before training, for a GPU with --gpu_min_free_gb free (0: do not wait; no effect without a GPU)."})
    gpu_min_free_gb: float = field(default=10, metadata={"help": "Free GPU memory (GiB) that --wait_for_gpu waits for."})

    def __post_init__(self) -> None:
        at_least(self, ("num_rollouts", "num_samples", "mine_samples", "max_questions", "max_new_tokens", "gen_batch_size"))
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        fraction(self, "test_fraction")
        require(0 <= self.solve_low <= 1, "solve_low", f"must be in [0, 1], got {self.solve_low}")
        require(self.solve_low <= self.solve_high <= 1, "solve_high", f"must be in [--solve_low, 1], got {self.solve_high}")
        require(self.wait_for_gpu >= 0, "wait_for_gpu", f"must be >= 0 minutes, got {self.wait_for_gpu}")


@dataclass
class PrmExpModel(ModelArgs):
    """The PRM: a SmolLM2 (Llama-architecture) backbone with LoRA adapters by default."""

    model: str = field(default="smollm2", metadata={"help": "PRM backbone: hub id, local path, or embedded 'smollm2' / 'minilm'."})
    lora: bool = field(default=True, metadata={"help": "Train LoRA adapters (--no_lora: every weight)."})


@dataclass
class PrmExpTraining(PRMTrainingArguments):
    """PRM training. Defaults that differ from PRMTrainingArguments: ``num_train_epochs=2``,
    ``learning_rate=2e-4``, ``per_device_train_batch_size=8``, ``max_length=512``,
    ``max_prompt_length=256``, ``bf16`` on a GPU or a CPU with bf16 instructions, ``logging_steps=5``,
    ``save_strategy="epoch"``, ``save_total_limit=2``."""

    num_train_epochs: float = field(default=2, metadata={"help": "PRM training epochs."})
    learning_rate: float = field(default=2e-4, metadata={"help": "PRM learning rate (AdamW)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "PRM training batch size."})
    max_length: int | None = field(default=512, metadata={"help": "PRM tokens per solution; whole trailing steps are removed beyond it."})
    max_prompt_length: int | None = field(default=256, metadata={"help": "PRM tokens kept of the question."})
    bf16: bool = field(default_factory=bf16_default, metadata={"help": "bf16 PRM training. Default: on with a GPU or a CPU with bf16 matmul "
                                                                "instructions (avx512_bf16, AMX, Arm BF16), off on other CPUs, where bf16 "
                                                                "runs several times slower than fp32."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch (a killed run resumes from the newest)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})


# RunArgs first: its --seed default (0) is the one flag's default, shared with the training group
TYPES = (PrmExpConfig, RunArgs, PrmExpModel, VerifierArgs, PrmExpTraining)


ARITHMETIC_PROBLEMS = Path(__file__).resolve().parent.parent / "data" / "arithmetic_problems.jsonl"


def problems_for(cfg: PrmExpConfig):
    if cfg.dataset == "openmathinstruct":
        return load("openmathinstruct", "nvidia/OpenMathInstruct-1", split="train", only_correct=True)
    if cfg.dataset == "gsm8k" or (cfg.dataset == "auto" and cfg.sft_model != "smollm2"):
        return load("gsm8k", resolve_path("$PRM_DATA_DIR/gsm8k/train.jsonl"))
    if cfg.dataset == "auto":
        # The 135M model solves about 3 in 100 GSM8K-style two-step problems, so mining found no
        # question it solves sometimes and all HE labels were -1; on the project's one- and two-step
        # problems its solve rate spreads from never to usually (data/make_arithmetic_problems.py).
        return load("gsm8k", ARITHMETIC_PROBLEMS)
    return load(cfg.dataset_format, resolve_path(cfg.dataset))


def work_dir(cfg: PrmExpConfig, ver: VerifierArgs, seed: int) -> Path:
    """Generation/grading files depend on these arguments only (not on the reward): same
    arguments, same folder, so reruns resume and --skip_generation finds the data."""
    keys = ("method", "sft_model", "dataset", "dataset_format", "num_rollouts", "num_samples", "mine_samples", "solve_low",
            "solve_high", "max_questions", "max_new_tokens", "temperature", "mc_label")
    blob = json.dumps({**{k: getattr(cfg, k) for k in keys}, "seed": seed, "verifier": resolve_name(ver.verifier), "claude_model": ver.claude_model,
                       "mc_completions": ver.mc_completions}, sort_keys=True)
    return Path("data") / "prm_exp" / f"method{cfg.method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def claude_kw(cfg: PrmExpConfig, ver: VerifierArgs, what: str, budget: float | None) -> dict:
    """Settings shared by the Claude generator and verifier."""
    return dict(max_concurrency=ver.max_concurrency, max_cost_usd=budget, batch=cfg.batch_api,
                confirm=lambda est: confirm_spend(est, cfg.yes, what))


def references_of(problems) -> dict[str, list[str]]:
    """Problem text -> its reference solution's steps (what the reference verifier checks against)."""
    return {p["prompt"]: p["completions"] for p in problems if p["completions"]}


def label_summary(graded: list[dict]) -> dict:
    """What labelling cost and kept: Monte-Carlo rollouts/tokens per solution, consensus agreement."""
    out: dict = {}
    mc = [g["label_stats"] for g in graded if "rollouts" in (g.get("label_stats") or {})]
    mc += [m["stats"] for g in graded for m in (g.get("verdicts") or {}).values() if "rollouts" in (m.get("stats") or {})]
    if mc:
        out["mc_cost"] = {"solutions": len(mc), "search": sorted({s["search"] for s in mc}), **rollout_cost(mc),
                          "sampled": sum(s["sampled"] for s in mc)}
    if any(g.get("verdicts") for g in graded):
        out["consensus"] = consensus_summary(graded)
    return out


EMBEDDED_PROFILE = {"max_questions": 160, "num_rollouts": 8, "max_new_tokens": 96, "gen_batch_size": 32, "test_fraction": 0.3}
FULL_PROFILE = {"max_questions": None, "num_rollouts": 5, "max_new_tokens": 256, "gen_batch_size": 8, "test_fraction": 0.2}


def main(cfg: PrmExpConfig, ra: RunArgs, model: PrmExpModel, ver: VerifierArgs, args: PrmExpTraining) -> dict:
    # --- setup
    t0 = time.time()
    # Unset limits: small with the embedded SmolLM2 (its solutions of the arithmetic problems take
    # under 60 tokens; sampling ~500 of them is nearly all of the run's time). It solves 13% of the
    # examined questions 30-80% of the time, so 160 examined keep ~21 and 30% of those are held out.
    profile = EMBEDDED_PROFILE if cfg.sft_model == "smollm2" else FULL_PROFILE
    for k, v in profile.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    log.info("limits: max_questions=%s solve band=[%.2f, %.2f] max_new_tokens=%d", cfg.max_questions, cfg.solve_low, cfg.solve_high, cfg.max_new_tokens)
    if cfg.method == 2:
        if not load_dotenv_key():
            raise SystemExit("error: --method 2 needs ANTHROPIC_API_KEY (environment or .env): Claude generates and grades")
    name = args.run_name = ra.run_name or f"method{cfg.method}_{cfg.reward}"
    work = work_dir(cfg, ver, ra.seed)
    adapter_dir = Path(cfg.output_root) / "math_prm_adapter" / name
    args.output_dir = str(adapter_dir)
    # the run directory and the adapter's checkpoints belong to this run's settings (a run with
    # other settings refuses instead of resuming from, or reporting, another run's adapter)
    run_dir = RunDir.claim(ra.run_dir("prm_exp", name), settings(cfg, ra, model, ver, args, verifier_used=resolve_name(ver.verifier)),
                           seed=ra.seed, overwrite=ra.overwrite)
    writable(adapter_dir, "output_root")
    if cfg.dataset not in ("auto", "gsm8k", "openmathinstruct"):
        resolve_data(cfg.dataset, "dataset")
    if ra.dry_run:
        log.info("dry run: settings valid; would write %s and %s", run_dir.path, adapter_dir)
        return {"dry_run": True, "run_dir": str(run_dir.path)}
    set_seed(ra.seed)

    # --- data: mine, generate, grade (each stage resumable)
    graded_path = work / "graded.jsonl"
    api_usage: dict[str, dict] = {}
    if cfg.skip_generation:
        if not graded_path.is_file():
            raise SystemExit(f"error: --skip_generation but no graded data at {graded_path}; run once without it")
        verifier_name = "(cached)"
        graded = graded_rows(graded_path)
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / "args.json", {k: v for k, v in asdict(cfg).items() if k not in ("reward", "skip_generation")})
        problems = problems_for(cfg).shuffle(seed=ra.seed)
        import torch

        from prm.label.generate import ClaudeGenerator, make_generator

        # The SFT model mines questions (both methods) and writes the rollouts (Method 1): on the GPU
        # in bf16 when there is one (unless --use_cpu); the embedded SmolLM2 on a CPU samples in bf16
        # where the CPU has bf16 instructions: about 2x the solutions/s of fp32 (as in exp/offline_study.py)
        on_cpu = args.use_cpu or not torch.cuda.is_available()
        dtype = torch.bfloat16 if cfg.sft_model == "smollm2" and on_cpu and cpu_bf16_fast() else None
        gen = make_generator(cfg.sft_model, cfg.vllm, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, batch_size=cfg.gen_batch_size,
                             seed=ra.seed, device="cpu" if on_cpu else None, **({"dtype": dtype} if dtype else {}))
        mcfg = MiningConfig(cfg.mine_samples, cfg.solve_low, cfg.solve_high, cfg.num_samples, cfg.max_questions)
        try:
            kept = mine(problems, gen.generate, mcfg, work / "mining.jsonl", batch=max(1, cfg.gen_batch_size // max(1, cfg.mine_samples)))
            if cfg.method == 2:  # Claude writes the rollouts; prompt variants make them differ
                writer = ClaudeGenerator(ver.claude_model, cache_path=work / "claude_generation_cache.jsonl", **claude_kw(cfg, ver, "generation", ver.max_cost_usd))
                sols = rollouts(kept, cfg.num_rollouts, writer.generate, work / "solutions.jsonl", reuse_samples=False)
                api_usage["generation"] = writer.usage.as_dict(ver.claude_model)
            else:
                sols = rollouts(kept, cfg.num_rollouts, gen.generate, work / "solutions.jsonl")
            spent = api_usage.get("generation", {}).get("cost_usd") or 0.0
            budget = None if ver.max_cost_usd is None else ver.max_cost_usd - spent
            verifier = make_verifier(ver.verifier, VerifierOptions(
                model=ver.claude_model, cache_path=work / "claude_cache.jsonl", job=claude_kw(cfg, ver, "grading", budget),
                completer=gen.complete, num_completions=ver.mc_completions, mc_label=cfg.mc_label, mc_search=ver.mc_search,
                rollout_cache_path=work / "rollouts.jsonl", consensus=ver.consensus,
                references=references_of(problems) if "reference" in (ver.verifier, *ver.consensus) else None))
            verifier_name = verifier.name
            log.info("verifier: %s", verifier_name)
            graded = grade(sols, verifier, graded_path)
            if verifier.api_usage() is not None:
                api_usage["grading"] = verifier.api_usage()
        except BudgetExceeded as e:
            raise SystemExit(f"stopped: {e}") from None

    # --- rewards -> training data
    records, prefix = to_records(graded, cfg.reward)
    if not records:
        raise SystemExit("error: no labeled solution; widen --solve_low/--solve_high or raise --max_questions")
    train, test = split_questions(records, cfg.test_fraction, ra.seed)
    save_dataset(Path("data") / f"prm_dataset_method{cfg.method}_{cfg.reward}", train, test, prefix)
    labels = [v for r in records for v in r["labels"] if v is not None]
    test_labels = [v for r in test for v in r["labels"] if v is not None]
    counts = {"questions": len({r["meta"]["question_id"] for r in records}), "solutions": len(records), "steps": len(labels),
              "correct_step_share": sum(v >= 0.5 for v in labels) / len(labels), "solutions_correct": sum(bool(r["meta"]["solution_correct"]) for r in records),
              "train_solutions": len(train), "test_solutions": len(test), "test_steps": len(test_labels),
              "test_correct_steps": sum(v >= 0.5 for v in test_labels)}
    log.info("data: %s", counts)

    # --- model: a PRM (LoRA by default) with soft targets from the reward
    prm = build_prm(model, PRMSpec(label_scheme="soft", separator=args.step_separator))

    run_dir.begin()
    own_dir(adapter_dir, run_dir.fingerprint, ra.overwrite)

    # --- train (resumes from the newest checkpoint in adapter_dir: checkpoints of this run's settings)
    if cfg.wait_for_gpu > 0:
        gpu = wait_for_gpu(cfg.gpu_min_free_gb, cfg.wait_for_gpu)
        if gpu is not None:
            import torch

            torch.cuda.set_device(gpu)
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(train))
    resume = any(adapter_dir.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model(str(adapter_dir / "final_checkpoint"))
    trainer.state.save_to_json(str(adapter_dir / "trainer_state.json"))

    # --- evaluate on held-out questions
    # (the AUROCs come with an interval that resamples held-out questions: their steps are not independent)
    metrics, scored = evaluate_steps(prm, test, seed=ra.seed) if test else ({"steps": {"n_steps": 0}}, [])
    metrics.update(data=counts, wall_time_s=round(time.time() - t0, 1), verifier=verifier_name)
    metrics.update(label_summary(graded))
    if api_usage:
        metrics["api_usage"] = api_usage

    # --- save
    write_jsonl(run_dir.path / "log.jsonl", trainer.state.log_history)
    write_jsonl(run_dir.path / "predictions.jsonl", ({"id": r["id"], "labels": r["labels"], "step_scores": r["step_scores"]} for r in scored))
    run_dir.finish(metrics)
    s = metrics["steps"]
    print(f"\nPRM {name}: {counts['solutions']} solutions, {counts['steps']} labeled steps ({counts['correct_step_share']:.0%} correct)")
    ci = s.get("auroc_by_problem") or {}
    print(f"held-out steps: n={s.get('n_steps')} ({counts['test_correct_steps']} labeled correct, {s.get('n_steps', 0) - counts['test_correct_steps']} wrong) "
          f"accuracy={s.get('accuracy')} auroc={s.get('auroc')}" + (f" (95% interval over {ci['n_groups']} held-out questions: "
          f"{ci['ci_low']:.2f}-{ci['ci_high']:.2f})" if ci.get("ci_low") is not None else ""))
    if s.get("single_class"):
        print(f"warning: every held-out step is labeled '{s['single_class']}': accuracy only counts that class and AUROC is undefined; "
              "examine more questions (--max_questions) or check the mining band (--solve_low/--solve_high)")
    print(f"data: data/prm_dataset_method{cfg.method}_{cfg.reward}/  adapter: {adapter_dir}/final_checkpoint  results: {run_dir.path}")
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    """Run from the command line: user errors (bad paths, bad data) end in one line, not a traceback."""
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv, user_errors=(TimeoutError,))


if __name__ == "__main__":
    cli()
