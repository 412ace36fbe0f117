"""Model FLOP utilization (MFU) of this project's trainer, fp32 and bf16.

Achieved FLOP/s = (6 x non-embedding parameters x real tokens + attention) / wall time, over the
steady-state optimizer steps; attention adds 12 x layers x hidden x sum(row length^2) (QK^T and
attention x V, forward and backward). Padding is not counted: it is work, but wasted. The peak is
the best dense matmul rate (F.linear, what linear layers run) measured in the same process, in the same dtype, just before and
after training (so a loaded machine lowers both).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import torch

from .measure import matmul_peak, model_flops, non_embedding_params

log = logging.getLogger(__name__)


def efficiency_benchmark(model: str, rows: list[dict], steps: int, batch_size: int, warmup: int = 2, random_init: bool = False, seed: int = 0,
                         peak_seconds: float = 1.0) -> dict:
    from transformers import set_seed

    from prm.models.prm import PRM, PRMSpec
    from prm.train import PRMTrainer, PRMTrainingArguments

    from .measure import CountingCollator, step_timer, throughput

    out: dict[str, Any] = {"model": model, "steps": steps, "batch_size": batch_size, "runs": {}}
    for bf16 in (False, True):
        dtype = torch.bfloat16 if bf16 else torch.float32
        peak_before = matmul_peak(dtype, seconds=peak_seconds)
        set_seed(seed)
        prm = PRM.from_backbone(model, PRMSpec(label_scheme="binary"), use_pretrained=not random_init)
        args = PRMTrainingArguments(output_dir=tempfile.mkdtemp(prefix="mfu-bench-"), max_steps=steps, per_device_train_batch_size=batch_size,
                                    learning_rate=5e-5, save_strategy="no", report_to=[], disable_tqdm=True, bf16=bf16, logging_steps=10_000,
                                    max_length=512, max_prompt_length=None, seed=seed)
        trainer = PRMTrainer(prm=prm, args=args, train_dataset=rows)
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        timer = step_timer()
        trainer.add_callback(timer)
        trainer.train()
        m = throughput(timer.t, counter, warmup)
        peak_after = matmul_peak(dtype, seconds=peak_seconds)
        flops = model_flops(trainer.model, m["steady_tokens"], m["steady_sum_sq_len"])
        achieved = flops / m["steady_seconds"]
        peak = max(peak_before, peak_after)
        out["runs"]["bf16" if bf16 else "fp32"] = {
            "non_embedding_params": non_embedding_params(trainer.model), "tokens": m["steady_tokens"], "seconds": m["steady_seconds"], "model_flops": flops,
            "achieved_flops_per_s": achieved, "matmul_peak_flops_per_s": peak, "matmul_peak_before": peak_before,
            "matmul_peak_after": peak_after, "mfu": achieved / peak, "tokens_per_s": m["tokens_per_s"], "padding_fraction": m["padding_fraction"],
            "bf16_master_weights": trainer.use_master_weights, "attn_implementation": prm.model.config._attn_implementation,
        }
        log.info("%s: %.1f GFLOP/s of %.1f peak (MFU %.1f%%)", "bf16" if bf16 else "fp32", achieved / 1e9, peak / 1e9, 100 * achieved / peak)
        del trainer, prm
    return out
