"""BERT-style PRM (the BMUq PRM module) on PRM800K or any stepwise data: a tokens or a
sentence-embeddings featurizer, pretrained or random init, 3 or 2 classes; writes a run directory.

    # with internet: PRM800K from the hub (phase 1 + 2 train, held-out: phase 1 + 2 test)
    python exp/prm800k_bert.py --model_name_or_path bert-base-uncased --limit 20000 --run_name bert_tokens
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
    python exp/prm800k_bert.py --dataset math_shepherd --data peiyi9979/Math-Shepherd --num_labels 2 --limit 5000

Outputs: results/prm800k_bert/<run_name>/{config.json, metrics.json, log.jsonl, predictions.jsonl,
confusion.png} and the model in .../model (gitignored).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prm.bert_prm import BertPRMConfig, LabelError, PRMTrainer
from prm.config import run
from prm.data import load, resolve_path, split_by_problem
from prm.io import start_run, write_json, write_jsonl
from prm.plots.classify import plot_confusion

log = logging.getLogger("prm800k_bert")


@dataclass
class ScriptConfig:
    dataset: str = field(default="prm800k", metadata={"help": "Data format (python -m prm.data --list); prm800k reads phase 1/2 files."})
    data: str | None = field(default=None, metadata={"help": "prm800k: hub repo, folder of phase{1,2}_{train,test}.jsonl, or one file; else a file or hub id."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out data (default: PRM800K's test split, else a by-problem split of --data)."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of problems held out when there is no test split."})
    format_options: str = field(default="{}", metadata={"help": "Converter options as JSON, e.g. '{\"neutral\": \"positive\"}'."})
    streaming: bool = field(default=False, metadata={"help": "Stream the source (reads only --limit / --eval_limit records)."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many training records."})
    eval_limit: int | None = field(default=None, metadata={"help": "Use at most this many held-out records."})
    run_name: str = field(default="default", metadata={"help": "Results folder: results/prm800k_bert/<run_name>."})
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})


def take(ds, n):
    if n is None:
        return ds
    return ds.take(n) if not hasattr(ds, "select") else ds.select(range(min(n, len(ds))))


def main(sc: ScriptConfig, cfg: BertPRMConfig) -> dict:
    # --- setup
    run_dir = Path(sc.results_dir) / "prm800k_bert" / sc.run_name
    if cfg.output_dir == "prm_output":
        cfg.output_dir = str(run_dir / "checkpoints")
    start_run(run_dir, {"script": asdict(sc), "model": asdict(cfg)}, seed=cfg.seed)
    trainer = PRMTrainer(cfg)

    # --- data: PRM800K through its loader, anything else through prm.data.load
    opts = json.loads(sc.format_options)
    if sc.dataset == "prm800k":
        src = resolve_path(sc.data)
        one_file = src is not None and Path(src).is_file()  # one file: no test split of its own
        splits = trainer.load_prm800k_dataset(split="train" if one_file else None, streaming=sc.streaming, source=src, **opts)
        train, held = splits["train"], splits.get("test")
    else:
        train, held = load(sc.dataset, resolve_path(sc.data), streaming=sc.streaming, **opts), None
    if sc.eval_data:
        held = (trainer.load_prm800k_dataset(split="test", source=resolve_path(sc.eval_data), **opts)["test"] if sc.dataset == "prm800k"
                else load(sc.dataset, resolve_path(sc.eval_data), **opts))
    if sc.streaming:  # materialize what is used: training needs several passes
        train, held = [list(take(d, n)) if d is not None else None for d, n in ((train, sc.limit), (held, sc.eval_limit))]
    if held is None:
        train, held = split_by_problem(train, sc.eval_fraction, seed=cfg.seed)
    if not sc.streaming:
        train = take(train.shuffle(seed=cfg.seed), sc.limit)
        held = take(held, sc.eval_limit)
    train, held = trainer.prepare_dataset(train), trainer.prepare_dataset(held)
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
    trainer.save_model(run_dir / "model")
    write_json(run_dir / "metrics.json", metrics)
    write_jsonl(run_dir / "log.jsonl", trainer.log_history)
    write_jsonl(run_dir / "predictions.jsonl", trainer.last_predictions)
    plot_confusion(run_dir)
    b = metrics["majority_baseline"]
    log.info("held-out steps: n=%d accuracy=%.3f f1=%.3f (majority '%s': accuracy=%.3f f1=%.3f) epochs %s s -> %s",
             metrics["n_steps"], metrics["accuracy"], metrics["f1"], b["label"], b["accuracy"], b["f1"], trainer.epoch_seconds, run_dir)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(main, (ScriptConfig, BertPRMConfig), description=__doc__.split("\n")[0], user_errors=(LabelError,))
