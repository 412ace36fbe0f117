"""Scoring throughput.

`kinds_benchmark` (``python exp/bench.py score``): for every PRM kind, on a look-alike of the
published PRM with the embedded SmolLM2's weights and shape (random heads), solutions/s of PRM lab's
one scoring path (length-sorted batches, the problem's tokens shared by its solutions) against the
model card's usage (one solution per forward pass; RLHFlow's card runs one pass per step), same
model, data and dtype, alternating in one run; scores compared in fp32.

`score_benchmark` (``--kinds false``): best-of-N scoring of a token_cls PRM, N candidate solutions
of one problem:

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
from pathlib import Path
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


# look-alike name -> the reference usage: "solution" (one forward pass per solution, the card's
# layout) or "step" (one pass per step prefix, reading the last position: RLHFlow's card)
KIND_REFERENCES = {
    "Qwen2-0.5B-Reward-Math-Sheperd": "solution",
    "math-shepherd-mistral-7b-prm": "solution",
    "Llama3.1-8B-PRM-Deepseek-Data": "step",
    "Qwen2.5-Math-PRM-7B": "solution",
    "Skywork-o1-Open-PRM-Qwen-2.5-1.5B": "solution",
    "Mistral-7b-PRM-Math-Shepherd": "solution",  # OpenRLHF placeholder layout
}


@torch.no_grad()
def reference_scores(prm: Any, items: list, usage: str) -> list[list[float]]:
    """The model cards' way: a batch of one, the model's full output (for lm_tokens the whole
    vocabulary's logits, then the two tokens' columns), one pass per solution (or per step)."""
    from prm.models.kinds import LMTokens

    dev = next(prm.model.parameters()).device
    out = []
    for problem, cands in items:
        for steps in cands:
            prefixes = [steps[: k + 1] for k in range(len(steps))] if usage == "step" else [steps]
            scores: list[float] = []
            for pre in prefixes:
                enc = prm.encode(problem, pre)
                logits = prm.model(input_ids=torch.tensor([enc.input_ids], device=dev)).logits.float()  # (1, seq, classes or vocab)
                if isinstance(prm.kind, LMTokens):
                    logits = logits[..., [prm.kind.bad_id, prm.kind.good_id]]
                elif logits.shape[-1] == 1:  # value head: sigmoid
                    logits = torch.cat([torch.zeros_like(logits), logits], -1)
                p = logits.softmax(-1)[0, :, prm.positive_class]
                pos = enc.score_positions if usage == "solution" else enc.score_positions[-1:]
                scores += p[pos].tolist()
            out.append(scores)
    return out


def _timed(fn: Any, bf16: bool, prm: Any) -> tuple[float, Any]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    with _ctx(prm, bf16):
        res = fn()
    sync()
    return time.perf_counter() - t, res


def kinds_benchmark(body: str | None, data_path: str, n: int, n_problems: int, rounds: int, batch_size: int = 16, bf16: bool = True,
                    seed: int = 0, names: list[str] | None = None) -> dict:
    from prm.models.kinds import KNOWN_MODELS
    from prm.models.prm import PRM, PRMSpec
    from prm.testing.lookalikes import LOOKALIKES, make_lookalike

    items = candidates(data_path, n_problems, n, seed)
    n_sol = sum(len(c) for _, c in items)
    gpu = torch.cuda.is_available()
    out: dict[str, Any] = {"body": Path(body).name if body else None, "n_candidates": n, "n_problems": n_problems, "solutions": n_sol, "batch_size": batch_size,
                           "rounds": rounds, "dtype": "bf16" if bf16 else "fp32", "kinds": {}}
    for name in names or list(KIND_REFERENCES):
        usage = KIND_REFERENCES[name]
        model, tok = make_lookalike(name, body=body, seed=seed)
        spec = PRMSpec(backbone=name, kind="causal", **KNOWN_MODELS[LOOKALIKES[name][0]])
        prm = PRM(model, tok, spec)
        if gpu:
            prm.model.to("cuda")
        # equality in fp32 on the first problem's candidates
        ours = prm.score_batch([(items[0][0], c) for c in items[0][1]], batch_size)
        ref = reference_scores(prm, items[:1], usage)
        diff = max(abs(a - b) for u, v in zip(ours, ref) for a, b in zip(u, v))
        if gpu and bf16:
            prm.model.to(torch.bfloat16)
        flat = [(p, c) for p, cands in items for c in cands]
        _timed(lambda: prm.score_batch(flat[:batch_size], batch_size), bf16, prm)  # warm-up
        t_ours, t_ref = [], []
        for _ in range(rounds):  # alternate the two
            sec, _ = _timed(lambda: prm.score_batch(flat, batch_size), bf16, prm)
            t_ours.append(n_sol / sec)
            sec, _ = _timed(lambda: reference_scores(prm, items, usage), bf16, prm)
            t_ref.append(n_sol / sec)
        res = {"kind": spec.prm_kind, "layout": spec.layout, "reference": f"one forward pass per {usage}", "max_abs_score_diff_fp32": diff,
               "solutions_per_s": {"prm_lab": spread(t_ours), "reference": spread(t_ref)},
               "speedup": spread([a / b for a, b in zip(t_ours, t_ref)])}
        out["kinds"][name] = res
        log.info("%s: %.2fx (prm lab %.1f/s, reference %.1f/s), max |diff| %.1e", name, res["speedup"]["median"],
                 res["solutions_per_s"]["prm_lab"]["median"], res["solutions_per_s"]["reference"]["median"], diff)
        prm.model = model = None  # free before the next look-alike
    return out
