"""Best-of-N scoring throughput for a causal PRM: N candidate solutions of one problem.

Schemes (each in fp32 and bf16):

- ``naive``: the N full sequences (problem + solution) in one padded batch (`PRM.score_batch`).
- ``prefix_cache``: the problem's tokens run once, their key/value cache shared by the N
  candidates, which then run only their own tokens (`PRM.score_candidates`).

bf16 means bf16 weights on a GPU and bf16 autocast on a CPU. Rounds alternate the schemes; the
scores of the two schemes are compared (they must agree: causal attention).
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from typing import Any

import torch

from .common import spread

log = logging.getLogger(__name__)


def candidates(path: str, n_problems: int, n: int, seed: int = 0) -> list[tuple[str, list[list[str]]]]:
    """N candidates per GSM8K problem: the reference solution and copies with one injected error
    each (different seeds), so candidates differ like sampled solutions do, in a step or two."""
    from prm.data.inject import gsm8k_errors
    from prm.io import read_jsonl

    rows = read_jsonl(path)
    rng = random.Random(seed)
    picks = rng.sample(range(len(rows)), min(len(rows), n_problems))
    out = []
    for idx in picks:
        cands = []
        for s in range(4 * n):
            recs = gsm8k_errors(rows[idx], idx, seed=seed + s)
            for r in recs[1:] if s else recs:
                if r["completions"] not in cands:
                    cands.append(r["completions"])
            if len(cands) >= n:
                break
        while len(cands) < n:  # a solution with little to corrupt: repeat what there is
            cands.append(cands[len(cands) % max(1, len(cands))])
        out.append((recs[0]["prompt"], cands[:n]))
    return out


def _ctx(prm: Any, bf16: bool):
    dev = next(prm.model.parameters()).device
    if bf16 and dev.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def _run(prm: Any, items: list, scheme: str, bf16: bool) -> tuple[float, list]:
    scores = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    with _ctx(prm, bf16):
        for problem, cands in items:
            if scheme == "naive":
                scores.append(prm.score_batch([(problem, c) for c in cands], batch_size=len(cands)))
            else:
                scores.append(prm.score_candidates(problem, cands, batch_size=len(cands)))
    sync()
    return time.perf_counter() - t, scores


def token_counts(prm: Any, items: list) -> dict:
    """Tokens each scheme runs through the model (padding included)."""
    from prm.models.encoding import prompt_ids

    naive = cache = real = 0
    for problem, cands in items:
        encs = [prm.encode(problem, c) for c in cands]
        lens = [len(e.input_ids) for e in encs]
        P = len(prompt_ids(prm.tokenizer, problem, separator=prm.spec.separator, max_length=prm.spec.max_length, max_prompt_length=prm.spec.max_prompt_length))
        naive += len(lens) * max(lens)
        cache += P + len(lens) * (max(lens) - P)
        real += sum(lens)
    return {"naive_padded": naive, "prefix_cache_padded": cache, "full_sequences_real": real}


def score_benchmark(model: str, data_path: str, ns: list[int], n_problems: int, rounds: int, random_init: bool = False,
                    dtypes: tuple[str, ...] = ("fp32", "bf16"), seed: int = 0) -> dict:
    from prm.models.prm import PRM, PRMSpec

    torch.manual_seed(seed)
    prm = PRM.from_backbone(model, PRMSpec(label_scheme="binary", max_length=1024), use_pretrained=not random_init)
    if prm.spec.kind != "causal":
        raise ValueError(f"the score benchmark needs a causal backbone; {model} is an encoder")
    gpu = torch.cuda.is_available()
    if gpu:
        prm.model.to("cuda")
    out: dict[str, Any] = {"model": model, "random_init": random_init, "n_problems": n_problems, "rounds": rounds, "dtypes": list(dtypes), "by_n": {}}
    schemes = [(sc, bf) for bf in (False, True) if ("bf16" if bf else "fp32") in dtypes for sc in ("naive", "prefix_cache")]
    for n in ns:
        items = candidates(data_path, n_problems, n, seed)
        res: dict[str, Any] = {"tokens": token_counts(prm, items)}
        times: dict[str, list[float]] = {}
        scores: dict[str, list] = {}
        # equality of the two schemes in fp32 on the first problem (always, whatever dtypes are timed)
        _, a = _run(prm, items[:1], "naive", False)
        _, b = _run(prm, items[:1], "prefix_cache", False)
        res["max_abs_score_diff_fp32"] = max(abs(x - y) for u, v in zip(a[0], b[0]) for x, y in zip(u, v))
        for dtype_bf16 in sorted({bf for _, bf in schemes}):
            if gpu:
                prm.model.to(torch.bfloat16 if dtype_bf16 else torch.float32)
            for scheme, bf in schemes:
                if bf != dtype_bf16:
                    continue
                _run(prm, items[:1], scheme, bf)  # warm-up: allocator, kernels
            for _ in range(rounds):
                for scheme, bf in schemes:
                    if bf != dtype_bf16:
                        continue
                    name = f"{scheme}_{'bf16' if bf else 'fp32'}"
                    sec, sc = _run(prm, items, scheme, bf)
                    times.setdefault(name, []).append(len(items) * n / sec)
                    scores[name] = sc
        if gpu:
            prm.model.to(torch.float32)
        res["solutions_per_s"] = {k: spread(v) for k, v in times.items()}
        base = "naive_fp32" if "naive_fp32" in times else "naive_bf16"
        res["speedup_vs_" + base] = {k: spread([a / b for a, b in zip(v, times[base])]) for k, v in times.items()}
        def flat(name):
            return [x for prob in scores[name] for cand in prob for x in cand]
        if "naive_bf16" in scores:
            res["max_abs_score_diff_bf16"] = max(abs(a - b) for a, b in zip(flat("naive_bf16"), flat("prefix_cache_bf16")))
        out["by_n"][str(n)] = res
        log.info("N=%d: %s", n, {k: round(v["median"], 2) for k, v in res["solutions_per_s"].items()})
    return out
