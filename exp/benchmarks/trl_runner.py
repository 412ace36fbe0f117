"""One TRL PRMTrainer run, executed by the Python of the isolated TRL environment.

    <trl-python> exp/benchmarks/trl_runner.py SPEC.json

SPEC holds: model (path), random_init, train_file / eval_file (TRL stepwise JSONL), steps,
batch_size, learning_rate, max_length, seed, mode ("defaults" or "best"), trl_attn (the attention
kernel of a "best" run: eager or sdpa), trl_bf16 (its precision: bf16 autocast, else fp32; default bf16), trl_sampling (its train_sampling_strategy: group_by_length or random), out (JSON path), warmup, eval_batch_size, profile. Only stdlib, torch, transformers, datasets and trl are used
(``prm`` is not installed here); measurements come from the sibling ``measure.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure


def main(spec_path: str) -> None:
    spec, rows, held = measure.read_spec(spec_path)
    t0 = time.perf_counter()
    import datasets
    import torch
    import transformers
    import trl
    from transformers import (
        AutoConfig,
        AutoModelForTokenClassification,
        AutoTokenizer,
        set_seed,
    )
    from trl.experimental.prm import PRMConfig, PRMTrainer

    set_seed(spec["seed"])
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"] or spec["model"])
    gpu = torch.cuda.is_available()
    # the attention kernel is the user's choice when loading the model: a "best" run takes the one
    # asked for (the harness runs eager and sdpa); defaults keep transformers' own (sdpa)
    attn = {"attn_implementation": spec["trl_attn"]} if spec["mode"] == "best" and spec.get("trl_attn") else {}
    if spec.get("random_init"):
        config = AutoConfig.from_pretrained(spec["model"], num_labels=2)
        with torch.device("cuda" if gpu else "cpu"):  # initialize a large random model where it runs
            model = AutoModelForTokenClassification.from_config(config, dtype=torch.float32, **attn)
    else:
        model = AutoModelForTokenClassification.from_pretrained(spec["model"], num_labels=2, ignore_mismatched_sizes=True, **attn)
    if tok.pad_token_id is None:  # decoders: TRL's documented recipe pads with eos
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    if gpu:
        model.to("cuda")
    rss_model = measure.peak_rss_mb()

    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
                  learning_rate=spec["learning_rate"], max_length=spec["max_length"], seed=spec["seed"], save_strategy="no",
                  report_to=[], logging_steps=max(1, spec["steps"]), dataloader_num_workers=0, disable_tqdm=True)
    if spec["mode"] == "defaults":
        # PRMConfig's own defaults (gradient checkpointing on, bf16 on). On a CPU, transformers
        # refuses bf16 unless use_cpu is set, so a CPU user of the defaults must turn bf16 off.
        cfg = dict(common, bf16=gpu)
    elif spec["mode"] == "best":
        # every switch a TRL user has: bf16 autocast (CPU: use_cpu=True) or fp32 where the CPU lacks bf16 instructions,
        # no checkpointing, the attention kernel above, and the batch sampler (transformers' length-grouped
        # batches need only the input_ids TRL's tokenizing writes)
        cfg = dict(common, bf16=spec.get("trl_bf16", True), use_cpu=not gpu, gradient_checkpointing=False,
                   train_sampling_strategy=spec.get("trl_sampling") or "random")
    else:
        raise ValueError(f"unknown TRL mode {spec['mode']!r}")
    args = PRMConfig(**cfg)
    trainer = PRMTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    out = measure.train_timed(trainer, spec, t0)

    enc = [PRMTrainer.tokenize_row(r, tok, args.step_separator, args.max_length, args.max_completion_length, False, True) for r in held]
    acc = measure.step_accuracy(trainer.model, enc, tok.pad_token_id, spec["eval_batch_size"], autocast=bool(args.bf16))
    out.update(acc)
    out.update({
        "system": "trl", "mode": spec["mode"], "bf16": bool(args.bf16), "gradient_checkpointing": bool(args.gradient_checkpointing),
        "use_cpu": bool(args.use_cpu), "attn_implementation": model.config._attn_implementation, "train_sampling_strategy": args.train_sampling_strategy, "rss_after_model_mb": rss_model,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(),
    })
    measure.write(spec["out"], out)


if __name__ == "__main__":
    main(sys.argv[1])
