"""QLoRA's memory saving: the same PRM trained with LoRA on full-precision (fp32) base weights and
with QLoRA on 4-bit NF4 base weights (bitsandbytes; `prm.models.prm.four_bit_kwargs`).

Protocol: the same backbone, TRL-format GSM8K rows, LoRA rank, batch, learning rate, number of
optimizer steps and seed. Each run is its own process, so every peak is that run's own. Runs
alternate lora, qlora, lora, qlora, ... for ``pairs`` rounds; ratios (qlora / lora) are taken within
a round and summarised by median and min-max, so slow drifts of a shared machine hit both sides.

Memory per run (Linux ``/proc/self/status``; the kernel's high-water mark is reset after loading):

- ``weight_mb``: parameters and buffers of the model (`get_memory_footprint`: NF4 weights at 4 bits
  plus their block scales; LoRA adapters and the head included);
- ``base_rss_mb``: resident memory after importing torch/transformers, before the model;
- ``rss_after_load_mb`` / ``load_peak_rss_mb``: resident memory after loading, and the peak while loading
  (the 4-bit load reads full-precision weights and quantizes them; the full-precision load maps the
  checkpoint file and pages weights in only as training touches them);
- ``train_peak_rss_mb``: the peak during training alone (weights, activations, gradients, optimizer).

The child entry point, one run per process:

    python -m exp.benchmarks.qlora SPEC.json   (from the repository root)
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import measure
from .common import gsm8k_rows, spread, write_rows

log = logging.getLogger(__name__)

CONFIGS = {"lora": False, "qlora": True}  # name -> 4-bit base weights
RATIO_METRICS = ("weight_mb", "rss_after_load_mb", "model_rss_mb", "train_peak_rss_mb", "train_peak_above_base_mb", "load_peak_rss_mb", "steps_per_s")


@dataclass
class QLoRABench:
    model: str = field(default="smollm2", metadata={"help": "Backbone: embedded name, local folder or hub id (pretrained weights: 4-bit quantizes them)."})
    n_train: int = field(default=64, metadata={"help": "Stepwise GSM8K training rows (reference + injected-error copies)."})
    n_eval: int = field(default=16, metadata={"help": "Held-out rows (other problems) for the loss after training."})
    steps: int = field(default=6, metadata={"help": "Optimizer steps per run."})
    batch_size: int = field(default=4, metadata={"help": "Rows per optimizer step."})
    max_length: int = field(default=256, metadata={"help": "Maximum tokens per row."})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate (LoRA-sized)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (alpha = 2 r) on every linear layer of the backbone."})
    activation_checkpointing: bool = field(default=True, metadata={"help": "Recompute activations in the backward pass (QLoRA's recipe): "
                                                                      "the weights, not the activations, then set the peak."})
    pairs: int = field(default=3, metadata={"help": "Alternation rounds (lora, qlora)."})
    warmup: int = field(default=2, metadata={"help": "Optimizer steps excluded from steps/s."})
    seed: int = 0


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory line (VmRSS, VmHWM) in MiB."""
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def _reset_peak() -> None:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def child(spec_path: str) -> None:
    """One measured run: load (4-bit or not), LoRA, train, evaluate; writes the spec's ``out``.
    ``trainable_tensors_changed`` counts the adapter and head tensors that training moved."""
    spec, rows, held = measure.read_spec(spec_path)
    import torch
    from transformers import set_seed

    from prm.models.prm import PRM, PRMSpec, apply_lora
    from prm.train import PRMTrainer, PRMTrainingArguments

    gc.collect()
    base_rss = _status_mb("VmRSS")
    set_seed(spec["seed"])
    t0 = time.perf_counter()
    prm = PRM.from_backbone(spec["model"], PRMSpec(label_scheme="binary"), load_in_4bit=spec["four_bit"])
    apply_lora(prm, r=spec["lora_r"], alpha=2 * spec["lora_r"], dropout=0.0)
    load_s = time.perf_counter() - t0
    gc.collect()
    weight_mb = prm.model.get_base_model().get_memory_footprint() / 2**20  # LoRA layers live inside the base model
    rss_load, peak_load = _status_mb("VmRSS"), _status_mb("VmHWM")
    anon_load, file_load = _status_mb("RssAnon"), _status_mb("RssFile")
    trainable = _checksums(prm.model)  # no copies: they would count in the training peak

    _reset_peak()
    args = PRMTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="prm-bench-"), max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"], learning_rate=spec["learning_rate"], max_length=spec["max_length"], max_prompt_length=None,
        seed=spec["seed"], save_strategy="no", report_to=[], logging_steps=1, dataloader_num_workers=0, disable_tqdm=True,
        activation_checkpointing=spec["activation_checkpointing"],
    )
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=rows, eval_dataset=held)
    counter = measure.CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    timer = measure.step_timer()
    trainer.add_callback(timer)
    trainer.train()
    train_peak = _status_mb("VmHWM")
    changed = sum(trainable[n] != c for n, c in _checksums(prm.model).items())
    out = measure.throughput(timer.t, counter, spec["warmup"])
    n = out["steps"] - out["warmup_steps"]
    out["steps_per_s"] = n / out["steady_seconds"] if out["steady_seconds"] > 0 else None
    ev = trainer.evaluate()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out.update({
        "four_bit": spec["four_bit"], "activation_checkpointing": spec["activation_checkpointing"], "load_seconds": load_s,
        "trainable_params": sum(p.numel() for p in prm.model.parameters() if p.requires_grad), "trainable_tensors": len(trainable),
        "trainable_tensors_changed": changed,
        "weight_mb": weight_mb, "base_rss_mb": base_rss, "rss_after_load_mb": rss_load, "model_rss_mb": rss_load - base_rss, "load_peak_rss_mb": peak_load,
        # anonymous vs file-backed (memory-mapped checkpoint pages, libraries) resident memory after loading
        "rss_anon_after_load_mb": anon_load, "rss_file_after_load_mb": file_load,
        "train_peak_rss_mb": train_peak, "train_peak_above_base_mb": train_peak - base_rss,
        "train_losses": losses, "train_loss_mean": sum(losses) / len(losses) if losses else None,
        "eval_loss": ev.get("eval_loss"), "eval_accuracy": ev.get("eval_accuracy"),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None, "threads": torch.get_num_threads(),
    })
    measure.write(spec["out"], out)


def _checksums(model: Any) -> dict[str, float]:
    return {n: p.detach().double().abs().sum().item() for n, p in model.named_parameters() if p.requires_grad}


def tiny_checkpoint(out: Path) -> Path:
    """A tiny Llama-shaped causal-LM checkpoint with random weights (4-bit loading quantizes saved
    weights, so a config alone is not enough) and the embedded MiniLM tokenizer."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from .common import tiny_backbone

    tiny_backbone("llama", out)
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.from_pretrained(out)).save_pretrained(out)
    return out


def qlora_benchmark(cfg: QLoRABench, data_path: str, work: Path) -> dict:
    """Alternate LoRA and QLoRA runs (each its own process); per-run numbers, summaries and ratios."""
    from prm.models.backbones import resolve

    from .train import run_child

    work.mkdir(parents=True, exist_ok=True)
    train, held = gsm8k_rows(data_path, cfg.n_train, cfg.n_eval, cfg.seed)
    tf, ef = write_rows(work / "train.jsonl", train), write_rows(work / "eval.jsonl", held)
    spec = {"model": resolve(cfg.model), "train_file": str(tf), "eval_file": str(ef), "steps": cfg.steps, "batch_size": cfg.batch_size,
            "max_length": cfg.max_length, "learning_rate": cfg.learning_rate, "lora_r": cfg.lora_r, "warmup": cfg.warmup, "seed": cfg.seed,
            "activation_checkpointing": cfg.activation_checkpointing}
    cmd = [sys.executable, "-m", "exp.benchmarks.qlora"]
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    load_avg = [os.getloadavg()]
    for i in range(cfg.pairs):  # lora, qlora, lora, qlora, ...
        for name, four_bit in CONFIGS.items():
            runs[name].append(run_child(cmd, dict(spec, four_bit=four_bit), work, f"{name}_{i}"))
        lo, q = runs["lora"][-1], runs["qlora"][-1]
        log.info("round %d: weights %.0f -> %.0f MiB, training peak RSS %.0f -> %.0f MiB, steps/s %.3f -> %.3f", i, lo["weight_mb"], q["weight_mb"],
                 lo["train_peak_rss_mb"], q["train_peak_rss_mb"], lo["steps_per_s"] or 0, q["steps_per_s"] or 0)
        load_avg.append(os.getloadavg())
    metrics = (*RATIO_METRICS, "base_rss_mb", "eval_loss", "train_loss_mean", "eval_accuracy", "peak_gpu_mb", "load_seconds")
    summary = {name: {m: spread([r.get(m) for r in rs]) for m in metrics} for name, rs in runs.items()}
    ratios = {m: spread([_ratio(q.get(m), lo.get(m)) for lo, q in zip(runs["lora"], runs["qlora"])]) for m in (*RATIO_METRICS, "peak_gpu_mb")}
    loss_diff = {m: spread([q[m] - lo[m] for lo, q in zip(runs["lora"], runs["qlora"]) if q.get(m) is not None and lo.get(m) is not None])
                 for m in ("eval_loss", "train_loss_mean")}
    return {
        "model": cfg.model, "spec": {k: v for k, v in spec.items() if k not in ("train_file", "eval_file", "model")},
        "data": {"source": "GSM8K train, gsm8k_errors (cut after the wrong step)", "n_train": len(train), "n_eval": len(held)},
        # 1-, 5- and 15-minute load averages before and after each round: how busy the shared machine was
        "load_avg": [list(x) for x in load_avg],
        "runs": runs, "summary": summary, "ratios_qlora_vs_lora": ratios, "loss_diff_qlora_minus_lora": loss_diff,
    }


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b else None


if __name__ == "__main__":
    child(sys.argv[1])
