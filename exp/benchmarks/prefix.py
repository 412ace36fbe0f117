"""Single pass vs the per-prefix layout of the original prm_exp.py, on the same solutions.

- ``single``: one training row per solution, every step scored at its separator in one pass.
- ``per_prefix``: one row per step prefix (problem + steps 1..k, supervised at step k only),
  the layout the old prm_exp.py trained on (see `prm.label.pipeline.to_records`).

Both train one epoch with the same `PRMTrainer` settings; tokens are counted from the encodings.
For a causal backbone the two layouts give the same step scores (checked here before training);
the token count of the original's text template (``Question: ... Partial solution: ...``) is
reported too.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

import torch

log = logging.getLogger(__name__)


def per_prefix_records(rows: list[dict]) -> list[dict]:
    from prm.schema import make_record

    out = []
    for i, r in enumerate(rows):
        for k in range(len(r["completions"])):
            labels = [None] * k + [float(r["labels"][k])]
            out.append(make_record(r["prompt"], r["completions"][: k + 1], labels, "binary", id=f"{i}@{k}"))
    return out


def single_records(rows: list[dict]) -> list[dict]:
    from prm.schema import make_record

    return [make_record(r["prompt"], r["completions"], [float(v) for v in r["labels"]], "binary", id=str(i)) for i, r in enumerate(rows)]


def _epoch(prm: Any, records: list[dict], batch_size: int, bf16: bool) -> dict:
    from prm.schema import to_dataset
    from prm.train import PRMTrainer, PRMTrainingArguments

    from .measure import CountingCollator

    args = PRMTrainingArguments(output_dir=tempfile.mkdtemp(prefix="prefix-bench-"), num_train_epochs=1, per_device_train_batch_size=batch_size,
                                learning_rate=1e-5, save_strategy="no", report_to=[], disable_tqdm=True, bf16=bf16, logging_steps=10_000,
                                max_length=1024, max_prompt_length=None)
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=to_dataset(records))
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    t = time.perf_counter()
    trainer.train()
    sec = time.perf_counter() - t
    tot = counter.totals()
    return {"rows": len(records), "epoch_seconds": sec, "tokens": tot["tokens"], "padded_tokens": tot["padded_tokens"], "optimizer_steps": trainer.state.global_step}


def prefix_benchmark(model: str, rows: list[dict], batch_size: int, bf16: bool, random_init: bool = False, seed: int = 0) -> dict:
    import copy

    from prm.label.pipeline import to_records
    from prm.models.prm import PRM, PRMSpec

    torch.manual_seed(seed)
    base = PRM.from_backbone(model, PRMSpec(label_scheme="binary"), use_pretrained=not random_init)
    # equal scores: every step of the single pass vs the last step of each prefix (fp32)
    items = [(r["prompt"], r["completions"]) for r in rows]
    single = base.score_batch(items)
    prefix_items = [(p, st[: k + 1]) for p, st in items for k in range(len(st))]
    per = base.score_batch(prefix_items)
    flat_single = [x for s in single for x in s]
    flat_prefix = [s[-1] for s in per]
    diff = max(abs(a - b) for a, b in zip(flat_single, flat_prefix))
    if base.spec.kind == "causal" and diff > 1e-4:
        raise AssertionError(f"single-pass and per-prefix scores differ by {diff:.2e} on a causal backbone")

    # the original's text template, tokenized with the same tokenizer
    graded = [{"id": str(i), "question_id": str(i), "prompt": r["prompt"], "answer": None, "steps": r["completions"],
               "step_correct": [bool(v) for v in r["labels"]], "solution_correct": all(r["labels"])} for i, r in enumerate(rows)]
    _, prefix_text = to_records(graded, "HE")
    tok = base.tokenizer
    template_tokens = sum(len(tok(p["input_text"] + " " + p["target_text"])["input_ids"]) for p in prefix_text)

    res: dict[str, Any] = {"model": model, "kind": base.spec.kind, "solutions": len(rows), "steps": len(flat_single), "batch_size": batch_size,
                           "bf16": bf16, "max_abs_score_diff": diff, "scores_equal": diff <= 1e-4, "original_template_tokens": template_tokens}
    for name, recs in (("single", single_records(rows)), ("per_prefix", per_prefix_records(rows))):
        prm = PRM(copy.deepcopy(base.model), base.tokenizer, copy.deepcopy(base.spec))
        res[name] = _epoch(prm, recs, batch_size, bf16)
        log.info("%s: %s", name, res[name])
    res["token_ratio"] = res["per_prefix"]["tokens"] / res["single"]["tokens"]
    res["time_ratio"] = res["per_prefix"]["epoch_seconds"] / res["single"]["epoch_seconds"]
    return res
