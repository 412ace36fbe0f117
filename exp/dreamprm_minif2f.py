"""DreamPRM on miniF2F: a PRM trained on reweighted data, the domain weights learned by bilevel
optimization on a meta set judged by proof correctness (`prm.train.bilevel`).

    # offline, embedded MiniLM (builds the data once from $PRM_DATA_DIR; minutes on 2 CPU cores)
    python exp/dreamprm_minif2f.py --config exp/configs/dreamprm_minif2f/offline.yaml --dry_run
    python exp/dreamprm_minif2f.py --config exp/configs/dreamprm_minif2f/offline.yaml --baseline --run_name offline_baseline
    python exp/dreamprm_minif2f.py --config exp/configs/dreamprm_minif2f/offline.yaml --run_name offline_reweighted
    # resume a stopped run (Ctrl+C saves a checkpoint): the latest checkpoint, or a given step
    python exp/dreamprm_minif2f.py --config exp/configs/dreamprm_minif2f/offline.yaml --run_name offline_reweighted \\
        --resume_from results/dreamprm_minif2f/offline_reweighted/checkpoints
    # the original setting, with internet and a GPU (DreamPRM's own JSONL files)
    python exp/dreamprm_minif2f.py --config exp/configs/dreamprm_minif2f/paper.yaml \\
        --train_json_file data/train.jsonl --meta_json_file data/meta.jsonl

Data (DreamPRM JSONL: ``cot_response``, ``cot_steps[].pi``, ``meta_label``, ``informal_prefix``,
``formal_statement``, optional ``domain``). With ``--build_data`` and missing files, the offline
triple is built into the folder of ``--train_json_file`` by `prm.data.dreamprm_build`:

- train: the DreamPRM math solutions (``dreamprm/train_math.json`` joined with the step labels of
  ``meta_math.json``; domains gsm8k, augmented_gsm8k, math, augmented_math), each plus a copy with
  one number changed in one step (``pi`` 1 before it, 0 from it on, ``meta_label`` 0);
- meta: miniF2F ``valid`` (Lean 4 + informal statement, the human informal proof in sentence
  steps, ``meta_label`` 1) plus a copy of each proof with one number changed (``meta_label`` 0);
- held-out: miniF2F ``test``, built the same way.

Meta and held-out rows are judged whole, so the build shortens the steps of a proof that would not
fit ``--eval_max_length`` (middle words of its longest steps become ``...``; every step keeps its
place and label, the error is injected after shortening): every miniF2F row is scored. The folder's
``counts.json`` records the build settings; a folder built with other settings is rebuilt.

Outputs: results/dreamprm_minif2f/<run_name>/{config.json, metrics.json, log.jsonl (losses
and weights every log_every steps), weights.jsonl (the weight trajectory), predictions.jsonl
(held-out scores)}, checkpoints in --weights_path (default: the run's checkpoints/, gitignored),
the final PRM in the run's model/ (gitignored). Figure: python exp/make_figures.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import set_seed

from prm.config import ConfigError, DeviceArgs, ModelArgs, RunArgs, at_least, resolve_data, run, settings, split_list
from prm.data import load, resolve_path
from prm.data.dreamprm_build import ProofBudget, build_minif2f_pair, is_current, recipe
from prm.io import RunDir, own_dir, write_jsonl
from prm.models.prm import PRMSpec
from prm.recipes import build_prm
from prm.train.bilevel import BilevelConfig, BilevelTrainer, encode_records, train_top_layers

log = logging.getLogger("dreamprm_minif2f")
EXPERIMENT = "dreamprm_minif2f"


@dataclass
class DreamPRMConfig:
    train_json_file: str = field(default="data/cache/dreamprm_minif2f/train.jsonl", metadata={"help": "Training data, DreamPRM JSONL."})
    meta_json_file: str = field(default="data/cache/dreamprm_minif2f/meta.jsonl", metadata={"help": "Meta data (meta_label judges solutions)."})
    heldout_json_file: str | None = field(default="data/cache/dreamprm_minif2f/heldout.jsonl", metadata={"help": "Held-out data for the final comparison (optional)."})
    build_data: bool = field(default=False, metadata={"help": "Build the offline miniF2F triple from $PRM_DATA_DIR when the files are missing."})
    noisy_domains: list[str] = field(default_factory=list, metadata={"help": "With --build_data: train domains whose step labels become coin flips (a control)."})
    split_mode: str = field(default="auto", metadata={"help": "How cot_response splits into steps (auto, headers, paragraphs, lines, tag)."})
    train_limit: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    separator: str = field(default="\n", metadata={"help": "Step separator of the encoding (e.g. <extra_0> for Qwen PRMs)."})
    weights_path: str | None = field(default=None, metadata={"help": "Checkpoint folder (default: the run's checkpoints/)."})
    train_top_layers: int = field(default=0, metadata={"help": "Train only the head and the top N transformer layers (0: all); makes CPU runs cheap."})
    max_length: int = field(default=4096, metadata={"help": "Tokens per training solution; whole trailing steps are truncated."})
    eval_max_length: int | None = field(default=None, metadata={"help": "Tokens per meta/held-out solution (default: --max_length); a row that does not fit whole is dropped and counted."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Tokens kept of the problem (default: half of max_length)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers that prepare batches."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of evaluation."})
    project_name: str = field(default="dreamprm-minif2f", metadata={"help": "Weights & Biases project."})
    disable_wandb: bool = field(default=False, metadata={"help": "No Weights & Biases logging (also off when wandb is not installed)."})
    debug: bool = field(default=False, metadata={"help": "Debug logging; a failing step raises at once."})
    baseline: bool = field(default=False, metadata={"help": "No reweighting: every weight stays 1, no outer step."})
    resume_from: str | None = field(default=None, metadata={"help": "Checkpoint file or folder (latest) to resume from."})
    resume_step: int | None = field(default=None, metadata={"help": "Resume from checkpoint_step_<N>.pt in --weights_path."})

    def __post_init__(self) -> None:
        self.noisy_domains = split_list(self.noisy_domains)
        at_least(self, ("max_length", "eval_max_length", "max_prompt_length", "eval_batch_size", "train_limit"))
        at_least(self, ("num_workers", "train_top_layers", "resume_step"), 0)


@dataclass
class DreamModelArgs(ModelArgs):
    lora: bool = field(default=True, metadata={"help": "Train LoRA adapters (off: every trainable weight, see --train_top_layers)."})


@dataclass
class DreamDeviceArgs(DeviceArgs):
    # the bilevel loop trains the weights in their own dtype (no master copies): fp32 unless asked
    dtype: str = field(default="fp32", metadata={"help": "Model weights: fp32, bf16, fp16 (CUDA only), or auto (bf16 on a GPU, "
                                                         "fp32 on a CPU); torch's names bfloat16, float16, float32 work too."})


class ScoringTrainer(BilevelTrainer):
    """`BilevelTrainer` whose scoring (meta and held-out evaluation) shows one bar for the whole
    set, counting solutions; its own loop has none."""

    eval_desc = "scoring"

    def score(self, examples, batch_size: int = 16) -> list[dict]:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # length-sorted batches, as inside
        out: list[dict] = [{} for _ in examples]
        with tqdm(total=len(examples), desc=self.eval_desc, unit="solution") as bar:
            for b in range(0, len(order), batch_size * 8):
                idx = order[b : b + batch_size * 8]
                for i, row in zip(idx, super().score([examples[i] for i in idx], batch_size)):
                    out[i] = row
                bar.update(len(idx))
        return out


# BilevelConfig before RunArgs: their shared --seed takes BilevelConfig's default (42, DreamPRM's)
TYPES = (DreamPRMConfig, BilevelConfig, RunArgs, DreamModelArgs, DreamDeviceArgs)


def wandb_callback(cfg: DreamPRMConfig, name: str, config: dict):
    if cfg.disable_wandb:
        return None
    try:
        import wandb
    except ImportError:
        log.info("wandb is not installed: logging to the run directory only")
        return None
    wb = wandb.init(project=cfg.project_name, name=name, config=config)
    return lambda step, row: wb.log({k: v for k, v in row.items() if isinstance(v, (int, float))} | {f"w/{d}": w for d, w in (row.get("weights") or {}).items()}, step=step)


def proof_budget(prm, cfg: DreamPRMConfig) -> ProofBudget:
    """Step tokens a meta/held-out proof may use so that it fits --eval_max_length whole, whatever
    its prompt: the length minus [CLS]/BOS, the longest kept prompt and the separator after it."""
    from prm.models.encoding import prefix_ids, separator_ids

    tok = prm.tokenizer
    length = cfg.eval_max_length or cfg.max_length
    sep = len(separator_ids(tok, cfg.separator))
    prompt = cfg.max_prompt_length if cfg.max_prompt_length is not None else length // 2
    # the tokenizer is named by its vocabulary, so two PRMs on one backbone share the built data
    vocab = hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()[:10]
    return ProofBudget(length - len(prefix_ids(tok)) - prompt - sep, lambda s: len(tok(s, add_special_tokens=False)["input_ids"]) + sep,
                       tokenizer=f"{type(tok).__name__}-{vocab}")


def main(cfg: DreamPRMConfig, bl: BilevelConfig, ra: RunArgs, model: DreamModelArgs, dev: DreamDeviceArgs) -> dict:
    # --- setup: nothing is written before the data and the model loaded
    if cfg.baseline:
        bl.weighting = "none"
    if cfg.debug:
        logging.getLogger().setLevel(logging.DEBUG)
        bl.max_failed_batches = 0
    device = dev.torch_device()
    name = ra.run_name or "default"
    config = settings(cfg, bl, ra, model, dev)
    run_dir = RunDir.claim(Path(ra.results_dir) / EXPERIMENT / name, config, seed=bl.seed, overwrite=ra.overwrite)
    ckpt_dir = Path(cfg.weights_path) if cfg.weights_path else run_dir.path / "checkpoints"
    resume = cfg.resume_from or (str(ckpt_dir / f"checkpoint_step_{cfg.resume_step}.pt") if cfg.resume_step is not None else None)
    set_seed(bl.seed)  # before the model exists: the new head's initialization depends on it

    # --- data files (built below once the tokenizer that sizes them is loaded)
    paths = {k: resolve_path(getattr(cfg, f"{k}_json_file")) for k in ("train", "meta", "heldout")}
    out_dir = Path(paths["train"]).parent
    build = cfg.build_data and not all(Path(p).is_file() for p in paths.values() if p)
    if build and ra.dry_run:
        log.info("dry run: settings valid; the data would be built from $PRM_DATA_DIR into %s", out_dir)
        return {"dry_run": True, "would_build": str(out_dir), "run_dir": str(run_dir.path)}
    if not cfg.build_data:  # a missing file shows before the model loads
        paths = {k: resolve_data(p, f"{k}_json_file") for k, p in paths.items()}

    # --- model
    spec = PRMSpec(label_scheme="soft", separator=cfg.separator, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    prm = build_prm(model, spec, torch_dtype=dev.torch_dtype())

    # --- data: a folder built with other settings (another budget, other noisy domains) is rebuilt
    if cfg.build_data:
        fit = proof_budget(prm, cfg)
        wanted = recipe(0, cfg.noisy_domains, fit)
        if not is_current(out_dir, wanted):
            if ra.dry_run:
                log.info("dry run: settings valid; the data in %s would be rebuilt (built with other settings)", out_dir)
                return {"dry_run": True, "would_build": str(out_dir), "run_dir": str(run_dir.path)}
            counts = build_minif2f_pair(out_dir, seed=0, noisy_domains=cfg.noisy_domains, fit=fit)
            log.info("built the offline miniF2F data in %s: %s", out_dir, counts)
    paths = {k: resolve_data(p, f"{k}_json_file") for k, p in paths.items()}
    records = {k: load("dreamprm", p, split_mode=cfg.split_mode) for k, p in paths.items() if p}
    if cfg.train_limit:
        records["train"] = records["train"].shuffle(seed=bl.seed).select(range(min(cfg.train_limit, len(records["train"]))))
    if cfg.train_top_layers:
        train_top_layers(prm.model, cfg.train_top_layers)
    train, domains, n_train = encode_records(prm, records["train"])
    # meta and held-out rows are judged whole (meta_label speaks of the whole solution): they may
    # use a longer context than training, and a row that still does not fit is dropped and counted
    prm.spec.max_length = cfg.eval_max_length or cfg.max_length
    meta, _, n_meta = encode_records(prm, records["meta"], domains, drop_truncated=True)
    heldout, _, n_held = encode_records(prm, records["heldout"], domains, drop_truncated=True) if "heldout" in records else ([], [], {})
    prm.spec.max_length = cfg.max_length
    for what, kept, flag in (("train", train, "max_length"), ("meta", meta, "eval_max_length")):
        if not kept:
            raise ConfigError(f"--{flag} {getattr(cfg, flag) or cfg.max_length}: every {what} row is dropped (no step fits); raise it")
    n_params = sum(p.numel() for p in prm.model.parameters() if p.requires_grad)
    data = {"train": n_train, "meta": n_meta, "heldout": n_held, "domains": domains, "trainable_params": n_params}
    log.info("train %s, meta %s, held-out %s; domains %s; %d trainable parameters", n_train, n_meta, n_held, domains, n_params)
    if ra.dry_run:
        log.info("dry run: config, data and model are valid; would write %s", run_dir.path)
        return {"dry_run": True, "data": data, "run_dir": str(run_dir.path)}
    run_dir.begin()
    if cfg.weights_path:
        own_dir(ckpt_dir, run_dir.fingerprint, ra.overwrite, flag="weights_path")

    # --- train
    cb = wandb_callback(cfg, name, config)
    trainer = ScoringTrainer(prm, bl, train, meta, domains, run_dir=run_dir.path, checkpoint_dir=ckpt_dir, device=device,
                             num_workers=cfg.num_workers, callbacks=[cb] if cb else [])
    t0 = time.time()
    out = trainer.train(resume_from=resume)
    wall = time.time() - t0

    # --- evaluate: solution-level AUROC / accuracy / MSE against meta_label, step AUROC
    trainer.eval_desc = "scoring meta"
    meta_metrics, _ = trainer.evaluate(meta, cfg.eval_batch_size)
    trainer.eval_desc = "scoring held-out"
    held_metrics, held_rows = trainer.evaluate(heldout, cfg.eval_batch_size) if heldout else ({}, [])

    # --- save
    prm.save(run_dir.path / "model")
    trajectory = [{"step": r["step"], "weights": r["weights"]} for r in out["history"] if r.get("weights")]
    write_jsonl(run_dir.path / "weights.jsonl", trajectory)
    write_jsonl(run_dir.path / "predictions.jsonl", held_rows)
    last = next((r for r in reversed(out["history"]) if "train_loss" in r), {})
    metrics = {"status": out["status"], "steps": out["step"], "failed_steps": out["failed"], "train_wall_s": round(wall, 1),
               "baseline": bl.weighting == "none", "final_weights": trainer.weight_table(), "last_log": last,
               "meta": meta_metrics, "heldout": held_metrics, "data": data}
    run_dir.finish(metrics)
    log.info("%s after %d steps (%.0f s): meta AUROC %s, held-out AUROC %s, weights %s -> %s", out["status"], out["step"], wall,
             meta_metrics.get("auroc"), held_metrics.get("auroc"), metrics["final_weights"], run_dir.path)
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
