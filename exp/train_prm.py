"""Train a PRM on any supported step-labeled data with any backbone; writes a run directory.

    # offline default: MiniLM on GSM8K reference solutions + injected errors (a few minutes, 2 CPUs)
    python exp/train_prm.py --config exp/configs/train_prm/offline.yaml
    # any data and backbone, e.g. Math-Shepherd with a Llama decoder and LoRA on a GPU
    python exp/train_prm.py --data peiyi9979/Math-Shepherd --format math_shepherd \\
        --model meta-llama/Llama-3.2-1B --lora --bf16 --run_name llama_ms
    # resume a killed run
    python exp/train_prm.py --config exp/configs/train_prm/offline.yaml --resume_from_checkpoint true

Outputs: results/train_prm/<run_name>/{config.json, metrics.json, log.jsonl, predictions.jsonl}
and the trained PRM in .../model (gitignored).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import set_seed

from prm.config import run
from prm.data import load, resolve_path, split_by_problem
from prm.eval.steps import evaluate_steps
from prm.io import start_run, write_json, write_jsonl
from prm.models.prm import PRM, PRMSpec, apply_lora
from prm.train import PRMTrainer, PRMTrainingArguments
from prm.train.data import label_scheme_of

log = logging.getLogger("train_prm")


@dataclass
class TrainPRMConfig:
    data: str = field(default="$PRM_DATA_DIR/gsm8k/train.jsonl", metadata={"help": "Training data: local file or Hugging Face dataset id."})
    format: str = field(default="gsm8k_errors", metadata={"help": "Data format (python -m prm.data --list)."})
    format_options: str = field(default="{}", metadata={"help": "Converter options as JSON, e.g. '{\"label_scheme\": \"binary\"}'."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out data; default: a by-problem split of --data."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of problems held out when --eval_data is not given."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many training records."})
    eval_limit: int | None = field(default=None, metadata={"help": "Use at most this many held-out records."})
    model: str = field(default="minilm", metadata={"help": "Backbone: hub id, local path, or embedded 'minilm' / 'smollm2'."})
    use_pretrained: bool = field(default=True, metadata={"help": "Pretrained weights (else random init from the same config)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Comma-separated module names, or all-linear."})
    load_in_4bit: bool = field(default=False, metadata={"help": "4-bit QLoRA base weights (CUDA + bitsandbytes)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship custom code."})
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})
    experiment: str = field(default="train_prm", metadata={"help": "Results folder: results/<experiment>/<run_name>."})


def main(cfg: TrainPRMConfig, args: PRMTrainingArguments) -> dict:
    # --- setup
    args.run_name = args.run_name or "default"  # also the run folder: results/<experiment>/<run_name>
    run_dir = Path(cfg.results_dir) / cfg.experiment / args.run_name
    if args.output_dir in (None, "trainer_output"):
        args.output_dir = str(run_dir / "checkpoints")
    start_run(run_dir, {"script": asdict(cfg), "training": args.to_dict()}, seed=args.seed)
    set_seed(args.seed)  # before the model exists: its new head's initialization depends on it

    # --- data
    opts = json.loads(cfg.format_options)
    ds = load(cfg.format, resolve_path(cfg.data), **opts)
    if cfg.eval_data:
        train, held = ds, load(cfg.format, resolve_path(cfg.eval_data), **opts)
    else:
        train, held = split_by_problem(ds, cfg.eval_fraction, seed=args.seed)
    train = train.shuffle(seed=args.seed).select(range(min(len(train), cfg.limit or len(train))))
    held = held.select(range(min(len(held), cfg.eval_limit or len(held))))
    scheme = label_scheme_of(train)
    log.info("train %d records, held-out %d, label scheme %s", len(train), len(held), scheme)

    # --- model
    prm = PRM.from_backbone(cfg.model, PRMSpec(label_scheme=scheme), use_pretrained=cfg.use_pretrained,
                            trust_remote_code=cfg.trust_remote_code, load_in_4bit=cfg.load_in_4bit)
    if cfg.lora:
        apply_lora(prm, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)

    # --- train
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=train, eval_dataset=held)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(run_dir / "model"))

    # --- evaluate on held-out records with the saved tokenization
    metrics, scored = evaluate_steps(prm, held, batch_size=args.per_device_eval_batch_size)
    metrics["data"] = {k: v.as_dict() for k, v in trainer.encode_stats.items()}
    metrics["train"] = {k: v for k, v in trainer.state.log_history[-1].items()} if trainer.state.log_history else {}

    # --- save
    write_json(run_dir / "metrics.json", metrics)
    write_jsonl(run_dir / "log.jsonl", trainer.state.log_history)
    write_jsonl(run_dir / "predictions.jsonl", ({"id": r["id"], "labels": r["labels"], "step_scores": r["step_scores"]} for r in scored))
    s = metrics["steps"]
    log.info("held-out steps: n=%d accuracy=%.3f auroc=%s f1_weighted=%.3f -> %s", s["n_steps"], s["accuracy"], s["auroc"], s["f1_weighted"], run_dir)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(main, (TrainPRMConfig, PRMTrainingArguments), description=__doc__.split("\n")[0])
