"""Beam search throughput: prefix key/value reuse vs recomputing every prefix, at equal outputs.

Both schemes run the same beam search (`prm.search`, strategy ``beam``) with the same generator
weights, seed and PRM:

- ``reuse``: the problem prompt's keys/values are computed once per problem and held once (batch 1)
  for all rows, attended with one product over all rows (`prm.search.kv`); a kept partial solution
  continues from the keys/values its tokens got when they were generated (only its last token runs),
  and its small tail cache is copied into its M continuations.
- ``recompute``: every continuation runs its whole prefix (prompt and steps so far) from scratch,
  as a plain batched ``generate`` call per round would. Decoding after that uses the same
  preallocated per-row cache (no concatenation per token), without a shared prefix.

After one untimed warm-up search per scheme, rounds alternate which scheme goes first. Solutions/s counts the N final candidates of every
problem. Outputs are compared token for token (the same seed draws the same random numbers; fp32
logits of the two layouts agree to rounding, so a rare near-tie could flip a sample: the share of
problems with identical outputs is reported).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from .common import spread

log = logging.getLogger(__name__)


def problems_from(path: str, n: int, seed: int = 0) -> list[str]:
    import random

    from prm.io import read_jsonl

    rows = read_jsonl(path)
    return [rows[i]["question"] for i in random.Random(seed).sample(range(len(rows)), min(n, len(rows)))]


def _search(gen: Any, prm: Any, problems: list[str], settings: Any) -> tuple[float, list, int]:
    from prm.search import run_search

    t = time.perf_counter()
    outs, toks = [], 0
    for p in problems:
        r = run_search("beam", p, gen, prm, settings)
        outs.append([c["steps"] for c in r.candidates])
        toks += r.tokens
    return time.perf_counter() - t, outs, toks


def search_benchmark(model: Any, tokenizer: Any, prm: Any, problems: list[str], n: int, beam_width: int, max_steps: int,
                     max_step_tokens: int, max_tokens: int, rounds: int, seed: int = 0, warmup: bool = True) -> dict:
    from prm.search import LocalStepGenerator, SearchSettings

    settings = SearchSettings(n=n, beam_width=beam_width, max_steps=max_steps)
    kw = dict(temperature=0.8, top_p=1.0, max_step_tokens=max_step_tokens, max_tokens=max_tokens, seed=seed)
    secs: dict[str, list[float]] = {"reuse": [], "recompute": []}
    outputs: dict[str, list] = {}
    tokens: dict[str, int] = {}
    ratios = []
    for scheme in ("reuse", "recompute") if warmup else ():  # untimed warm-up: first-call costs (allocator, kernels) hit neither timed run
        _search(LocalStepGenerator(model, tokenizer, reuse_prefix=scheme == "reuse", **kw), prm, problems[:1], settings)
    for r in range(rounds):
        order = ("reuse", "recompute") if r % 2 == 0 else ("recompute", "reuse")
        this = {}
        for scheme in order:
            gen = LocalStepGenerator(model, tokenizer, reuse_prefix=scheme == "reuse", **kw)
            sec, outs, toks = _search(gen, prm, problems, settings)
            secs[scheme].append(sec)
            this[scheme] = sec
            outputs.setdefault(scheme, outs)
            tokens[scheme] = toks
            log.info("round %d %s: %.1f s, %d tokens", r, scheme, sec, toks)
        ratios.append(this["recompute"] / this["reuse"])
    same = [a == b for a, b in zip(outputs["reuse"], outputs["recompute"])]
    sols = len(problems) * n
    return {
        "problems": len(problems), "n": n, "beam_width": beam_width, "max_steps": max_steps, "max_step_tokens": max_step_tokens,
        "max_tokens": max_tokens, "rounds": rounds, "warmup": warmup, "torch_threads": torch.get_num_threads(),
        "seconds": {k: spread(v) for k, v in secs.items()},
        "solutions_per_s": {k: spread([sols / s for s in v]) for k, v in secs.items()},
        "speedup": spread(ratios),  # per round: recompute seconds / reuse seconds
        "generated_tokens": tokens,
        "identical_outputs": sum(same) / len(same),
    }
