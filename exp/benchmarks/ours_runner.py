"""One run of this project's PRMTrainer under the same protocol as `trl_runner.py`.

    python -m exp.benchmarks.ours_runner  (from the repository root) SPEC.json

Run as its own process so that its peak memory is its own and both systems start equally cold.
"""

from __future__ import annotations

import sys
import tempfile
import time

from . import measure


def main(spec_path: str) -> None:
    spec, rows, held = measure.read_spec(spec_path)
    t0 = time.perf_counter()
    import torch
    import transformers
    from transformers import set_seed

    from prm.models import last_layer
    from prm.models.prm import PRM, PRMSpec
    from prm.train import PRMTrainer, PRMTrainingArguments

    set_seed(spec["seed"])
    gpu = torch.cuda.is_available()
    with torch.device("cuda" if gpu and spec.get("random_init") else "cpu"):  # initialize a large random model where it runs
        prm = PRM.from_backbone(spec["model"], PRMSpec(label_scheme="binary"), use_pretrained=not spec.get("random_init"))
    rss_model = measure.peak_rss_mb()
    bf16 = spec["mode"] != "fp32"
    args = PRMTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="prm-bench-"), max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["learning_rate"], max_length=spec["max_length"], max_prompt_length=None, seed=spec["seed"],
        save_strategy="no", report_to=[], logging_steps=max(1, spec["steps"]), dataloader_num_workers=0, disable_tqdm=True, bf16=bf16,
        attn_implementation=spec.get("attn_implementation") or "auto",
        bf16_master_weights=spec.get("bf16_master_weights", True), freeze_embeddings=spec.get("freeze_embeddings", False),
        last_layer_at_labels=spec.get("last_layer_at_labels", True),
        # None: the trainer's default (on where it applies); true asks for it on causal backbones only
        share_prefix=None if spec.get("share_prefix") is None else bool(spec["share_prefix"]) and prm.spec.kind == "causal",
    )
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=rows)
    out = measure.train_timed(trainer, spec, t0)

    encs = [prm.encode(r["prompt"], r["completions"], [float(v) for v in r["labels"]]) for r in held]
    enc = [{"input_ids": e.input_ids, "labels": e.labels} for e in encs if e is not None]
    out.update(measure.step_accuracy(trainer.model, enc, prm.tokenizer.pad_token_id, spec["eval_batch_size"], autocast=bf16))
    out.update({
        "system": "ours", "mode": spec["mode"], "bf16": bf16, "gradient_checkpointing": bool(args.gradient_checkpointing),
        "use_cpu": bool(args.use_cpu), "attn_implementation": prm.model.config._attn_implementation, "train_sampling_strategy": args.train_sampling_strategy,
        "bf16_master_weights": trainer.use_master_weights, "freeze_embeddings": bool(args.freeze_embeddings),
        "last_layer_at_labels": bool(args.last_layer_at_labels) and last_layer.supports(trainer.model),
        "share_prefix": trainer.share_prefix, "rss_after_model_mb": rss_model,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__}, "threads": torch.get_num_threads(),
    })
    measure.write(spec["out"], out)


if __name__ == "__main__":
    main(sys.argv[1])
