"""BERT-style PRM (the BMUq PRM module) on PRM800K or any stepwise data: a tokens or a
sentence-embeddings featurizer, pretrained or random init, 3 or 2 classes; writes a run directory.

    # with internet: PRM800K from the hub (phase 1 + 2 train, held-out: phase 1 + 2 test)
    python exp/prm800k_bert.py --model bert-base-uncased --limit 20000 --run_name bert_tokens
    python exp/prm800k_bert.py --featurizer_type embeddings --featurizer_model sentence-transformers/all-MiniLM-L6-v2 \\
        --use_pretrained false --num_train_epochs 5 --run_name bert_embeddings
    # offline: the PRM800K sample rows in $PRM_DATA_DIR/samples (exercises the real loader; a smoke run)
    python exp/prm800k_bert.py --config exp/configs/prm800k_bert/samples.yaml
    # offline, larger: SmolLM2's own GSM8K solutions graded by the rules verifier (binary), each
    # featurizer on the embedded MiniLM; the data files come from the offline study's data stage
    python exp/offline_study.py --stages data
    python exp/prm800k_bert.py --config exp/configs/prm800k_bert/smollm2_embeddings.yaml
    python exp/prm800k_bert.py --config exp/configs/prm800k_bert/smollm2_single_pass.yaml
    # offline: GSM8K with injected errors (gsm8k_tokens.yaml, gsm8k_embeddings.yaml, ...)
    python exp/prm800k_bert.py --config exp/configs/prm800k_bert/gsm8k_tokens.yaml
    # any other supported stepwise data
    python exp/prm800k_bert.py --format math_shepherd --data peiyi9979/Math-Shepherd --num_labels 2 --limit 5000

Outputs: results/prm800k_bert/<run_name>/{config.json, metrics.json, log.jsonl, predictions.jsonl,
confusion.png} and the model in .../model (gitignored).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prm.bert_prm import BertPRMConfig, BertPRMOptions, LabelError, PRMTrainer
from prm.config import DataArgs, ModelArgs, RunArgs, require, resolve_data, run, settings
from prm.data import load, split_by_problem
from prm.io import RunDir, write_jsonl
from prm.plots.classify import plot_confusion

log = logging.getLogger("prm800k_bert")
EXPERIMENT = "prm800k_bert"


@dataclass
class ScriptConfig(DataArgs):
    format: str = field(default="prm800k", metadata={"help": "Data format (python -m prm.data --list); prm800k reads phase 1/2 files.", "aliases": ["--dataset"]})
    data: str | None = field(default=None, metadata={"help": "prm800k: hub repo, folder of phase{1,2}_{train,test}.jsonl, or one file; else a file or hub id."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out data (default: PRM800K's test split, else a by-problem split of --data)."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of problems held out when there is no test split."})
    streaming: bool = field(default=False, metadata={"help": "Stream the source (reads only --limit / --eval_limit records)."})


TYPES = (ScriptConfig, ModelArgs, BertPRMOptions, RunArgs)


def take(ds, n):
    if n is None:
        return ds
    return ds.take(n) if not hasattr(ds, "select") else ds.select(range(min(n, len(ds))))


def main(sc: ScriptConfig, ma: ModelArgs, bo: BertPRMOptions, ra: RunArgs) -> dict:
    # --- setup: the backbone comes from the shared model group; full weights only (BMUq trains no adapters)
    require(not ma.lora and not ma.load_in_4bit, "lora", "prm800k_bert trains full weights; use exp/train_prm.py for LoRA/QLoRA")
    cfg = BertPRMConfig(**asdict(bo), model_name_or_path=ma.model, use_pretrained=ma.use_pretrained)
    # claim the run directory (nothing written before the data and model loaded)
    run_dir = RunDir.claim(ra.run_dir(EXPERIMENT), settings(sc, ma, bo, ra), seed=cfg.seed, overwrite=ra.overwrite)
    if cfg.output_dir == "prm_output":
        cfg.output_dir = str(run_dir.path / "checkpoints")
    paths = {"data": resolve_data(sc.data, "data"), "eval_data": resolve_data(sc.eval_data, "eval_data")}
    if ra.dry_run:
        log.info("dry run: settings valid, data %s; would write %s", paths, run_dir.path)
        return {"dry_run": True, "data": paths, "run_dir": str(run_dir.path)}
    trainer = PRMTrainer(cfg)

    # --- data: PRM800K through its loader, anything else through prm.data.load
    opts = sc.format_options
    if sc.format == "prm800k":
        src = paths["data"]
        one_file = src is not None and Path(src).is_file()  # one file: no test split of its own
        splits = trainer.load_prm800k_dataset(split="train" if one_file else None, streaming=sc.streaming, source=src, **opts)
        train, held = splits["train"], splits.get("test")
    else:
        train, held = load(sc.format, paths["data"], streaming=sc.streaming, **opts), None
    if sc.eval_data:
        held = (trainer.load_prm800k_dataset(split="test", source=paths["eval_data"], **opts)["test"] if sc.format == "prm800k"
                else load(sc.format, paths["eval_data"], **opts))
    if sc.streaming:  # materialize what is used: training needs several passes
        train, held = [list(take(d, n)) if d is not None else None for d, n in ((train, sc.limit), (held, sc.eval_limit))]
    if held is None:
        train, held = split_by_problem(train, sc.eval_fraction, seed=cfg.seed)
    if not sc.streaming:
        train = take(train.shuffle(seed=cfg.seed), sc.limit)
        held = take(held, sc.eval_limit)
    train, held = trainer.prepare_dataset(train), trainer.prepare_dataset(held)
    run_dir.begin()
    log.info("train %d solutions, held-out %d, %d classes %s", len(train), len(held), cfg.num_labels, cfg.names)

    # --- train (the final model is saved to <output_dir>/final_model) and evaluate on held-out steps
    t0 = time.perf_counter()
    trainer.train(train)
    train_seconds = time.perf_counter() - t0
    metrics = trainer.evaluate(held)
    metrics["train"] = {"seconds": round(train_seconds, 1), "epoch_seconds": trainer.epoch_seconds, "records": len(train),
                        "steps": int(sum(v is not None for ls in train["labels"] for v in ls))}
    if trainer.embedder is not None:
        metrics["embedding_cache"] = {k: round(v, 2) for k, v in trainer.embedder.stats.items()}

    # --- save
    trainer.save_model(run_dir.path / "model")
    write_jsonl(run_dir.path / "log.jsonl", trainer.log_history)
    write_jsonl(run_dir.path / "predictions.jsonl", trainer.last_predictions)
    run_dir.finish(metrics)
    plot_confusion(run_dir.path)
    b = metrics["majority_baseline"]
    log.info("held-out steps: n=%d accuracy=%.3f f1=%.3f (majority '%s': accuracy=%.3f f1=%.3f) epochs %s s -> %s",
             metrics["n_steps"], metrics["accuracy"], metrics["f1"], b["label"], b["accuracy"], b["f1"], trainer.epoch_seconds, run_dir.path)
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv, user_errors=(LabelError,))


if __name__ == "__main__":
    cli()
