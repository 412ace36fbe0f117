"""Measurements shared by both training runners (this project's and TRL's).

This module imports only the standard library, torch and transformers, because the TRL runner
imports it by path from inside the isolated TRL environment, where ``prm`` is not installed.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

IGNORE = -100


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def matmul_peak(dtype: torch.dtype, size: int | None = None, seconds: float = 1.0) -> float:
    """Best observed FLOP/s of a square ``F.linear`` in ``dtype`` on the default device: the kernel
    a model's linear layers run. (On a CPU without avx512_bf16 or AMX, bf16 ``a @ b`` takes a path
    ~20x slower than linear's, so a peak timed with it would be one a model beats.)"""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    size = size or (8192 if dev == "cuda" else 1024)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for _ in range(2):
        torch.nn.functional.linear(a, b)
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(5):
            torch.nn.functional.linear(a, b)
        sync()
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - t))
    return best


def non_embedding_params(model: Any) -> int:
    """Parameters outside embedding tables (a lookup costs no FLOPs)."""
    emb = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def model_flops(model: Any, tokens: int, sum_sq_len: int) -> float:
    """Training FLOPs of rows of ``tokens`` real tokens in all (padding is not work done for them):
    6 x non-embedding parameters x tokens, plus attention's QK^T and attention x V, forward and
    backward, 12 x layers x hidden x the sum of squared row lengths. Rows are counted whole and one
    by one, as a plain trainer computes them: a run that shares prompts, or computes an encoder's
    last layer at labeled positions only, does less work than this for the same rows."""
    cfg = model.config
    return 6 * non_embedding_params(model) * tokens + 12 * getattr(cfg, "num_hidden_layers", 0) * getattr(cfg, "hidden_size", 0) * sum_sq_len


class CountingCollator:
    """Wraps a collator and records, per batch, rows, real tokens, padded width and the sum of
    squared row lengths (for attention FLOPs). With no gradient accumulation, batch i is step i."""

    def __init__(self, collate: Callable[[list[dict]], dict]):
        self.collate = collate
        self.batches: list[dict] = []

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.collate(rows)
        lens = [len(r["input_ids"]) for r in rows]
        ids = batch["input_ids"]
        self.batches.append({"rows": len(rows), "tokens": sum(lens), "padded": int(ids.numel()), "sq": sum(n * n for n in lens)})
        return batch

    def totals(self, skip: int = 0) -> dict:
        bs = self.batches[skip:]
        tok, pad = sum(b["tokens"] for b in bs), sum(b["padded"] for b in bs)
        return {"examples": sum(b["rows"] for b in bs), "tokens": tok, "padded_tokens": pad,
                "padding_fraction": 1.0 - tok / pad if pad else 0.0, "sum_sq_len": sum(b["sq"] for b in bs)}


def step_timer():
    """A TrainerCallback recording the wall clock (and this process's CPU time, which a shared
    machine's other jobs disturb far less) at the start of training and after each optimizer step
    (created lazily so importing this module does not import transformers)."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.t: list[float] = []
            self.cpu: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.t, self.cpu = [time.perf_counter()], [time.process_time()]

        def on_step_end(self, args, state, control, **kw):
            self.t.append(time.perf_counter())
            self.cpu.append(time.process_time())

    return StepTimes()


def throughput(times: Sequence[float], counter: CountingCollator, warmup: int) -> dict:
    """Examples/s and real tokens/s over the steps after ``warmup`` (the first steps pay for
    allocations and thread start-up), plus totals over all steps."""
    n_steps = len(times) - 1
    warmup = min(warmup, max(0, n_steps - 1))
    steady = counter.totals(skip=warmup)
    # batches beyond the steps (a prefetched one) are not counted
    steady_batches = counter.batches[warmup:n_steps]
    ex = sum(b["rows"] for b in steady_batches)
    tok = sum(b["tokens"] for b in steady_batches)
    sec = times[-1] - times[warmup]
    allb = counter.totals()
    return {
        "steps": n_steps, "warmup_steps": warmup, "train_seconds": times[-1] - times[0], "steady_seconds": sec,
        "examples_per_s": ex / sec if sec > 0 else None, "tokens_per_s": tok / sec if sec > 0 else None,
        # positions the model computed per row token: 1 + padding; below 1 when rows share a prefix
        # (then padding_fraction, 1 - tokens / positions, is negative)
        "positions_per_token": allb["padded_tokens"] / allb["tokens"] if allb["tokens"] else None,
        "padding_fraction": allb["padding_fraction"], "tokens": allb["tokens"], "padded_tokens": allb["padded_tokens"],
        "examples": allb["examples"], "steady_tokens": tok, "steady_examples": ex, "steady_sum_sq_len": sum(b["sq"] for b in steady_batches),
        "padding_fraction_steady": steady["padding_fraction"],
    }


def epoch_equivalent(m: dict, row_lengths: Sequence[int]) -> dict:
    """Examples/s over a whole epoch of the training set, estimated from the measured real-token
    rate and the mean row length under this system's own tokenization. A short run of a
    length-grouped sampler sees the longest rows first, so its raw examples/s understates it."""
    rate = m.get("tokens_per_s")
    mean_len = sum(row_lengths) / max(1, len(row_lengths))
    return {"epoch_rows": len(row_lengths), "epoch_mean_row_tokens": mean_len, "epoch_examples_per_s": rate / mean_len if rate else None}


@torch.no_grad()
def step_accuracy(model: Any, rows: Sequence[dict], pad_id: int, batch_size: int = 32, autocast: bool = False) -> dict:
    """Held-out step accuracy: argmax of the logits at every labeled position (binary heads:
    the same as P(correct) > 0.5). ``rows`` hold ``input_ids`` and ``labels`` (IGNORE elsewhere)."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    right = total = 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(rows[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        lab = torch.full((len(idx), width), float(IGNORE))
        for r, i in enumerate(idx):
            n = len(rows[i]["input_ids"])
            ids[r, :n] = torch.as_tensor(rows[i]["input_ids"])
            att[r, :n] = 1
            lab[r, :n] = torch.as_tensor(rows[i]["labels"], dtype=torch.float32)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
        mask = lab != IGNORE
        pred = logits.float().argmax(-1).cpu()[mask]
        right += int((pred == lab[mask].long()).sum())
        total += int(mask.sum())
    return {"step_accuracy": right / total if total else None, "n_steps": total}


def profile_top(fn: Callable[[], Any], k: int = 12) -> list[dict]:
    """Run ``fn`` under torch.profiler and return the top-k operators by self CPU (or CUDA) time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    cuda = torch.cuda.is_available()
    events = prof.key_averages()
    key = (lambda e: getattr(e, "self_device_time_total", 0)) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(key(e) for e in events) or 1
    top = sorted(events, key=key, reverse=True)[:k]
    return [{"op": e.key, "self_ms": key(e) / 1000, "share": key(e) / total, "calls": e.count} for e in top]


def write(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def read_spec(spec_path: str) -> tuple[dict, list[dict], list[dict]]:
    """A runner's job: the spec JSON, its training rows and its held-out rows (both runners, each in its own venv)."""
    import json

    with open(spec_path) as f:
        spec = json.load(f)
    with open(spec["train_file"]) as f:
        rows = [json.loads(x) for x in f]
    with open(spec["eval_file"]) as f:
        held = [json.loads(x) for x in f]
    return spec, rows, held


def train_timed(trainer: Any, spec: dict, t0: float) -> dict:
    """Run ``trainer.train()`` (under the profiler when ``spec["profile"]``) with its batches counted
    and its steps timed: throughput past ``spec["warmup"]`` steps, epoch equivalents, setup seconds
    since ``t0``, peak RSS and the profile's top ops. The same protocol for both runners."""
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer()
    trainer.add_callback(timer)
    setup_s = time.perf_counter() - t0
    top = None
    if spec.get("profile"):
        top = profile_top(trainer.train)
    else:
        trainer.train()
    rss = peak_rss_mb()
    out = throughput(timer.t, counter, spec["warmup"])
    w = out["warmup_steps"]
    cpu = timer.cpu[-1] - timer.cpu[w]  # all threads of this process, over the same steps
    out.update({"cpu_seconds": cpu, "examples_per_cpu_s": out["steady_examples"] / cpu if cpu > 0 else None})
    out.update(epoch_equivalent(out, [len(x) for x in trainer.train_dataset["input_ids"]]))
    sec = out["steady_seconds"]
    flops = model_flops(trainer.model, out["steady_tokens"], out["steady_sum_sq_len"])
    out.update({"setup_seconds": setup_s, "peak_rss_mb": rss, "profile_top": top, "model_flops_per_s": flops / sec if sec > 0 else None})
    return out
