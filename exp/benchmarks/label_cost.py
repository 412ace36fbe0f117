"""What Claude grading costs per labeled solution: requests and tokens as the loopback fake Messages
API (`prm.testing.fake_anthropic`) reports them, priced with the project's one price table and cost
function (`prm.label.prices`), as USD per 1000 solutions at list prices, for every priced model.

The fake API models prompt caching as Anthropic documents it: the prefix up to the block marked
``cache_control`` is cached only when it reaches the model's minimum (`CACHE_MIN_TOKENS`), the first
request writes it (1.25x input price) and later ones read it (0.1x). So whether caching applies is
measured per model, not assumed: the grading instructions (rules plus worked examples, ~4,650
tokens at `CHARS_PER_TOKEN`) pass every priced model's minimum (1,024 to 4,096); the earlier rules
alone (~150 tokens) pass none.

Schemes (each against a fresh fake server, so no scheme reads another's cache):

- ``per_solution``: the project's verifier (`prm.label.verify.claude.ClaudeVerifier`), one request
  grades all steps of a solution; the instructions carry ``cache_control`` and the first request is
  sent alone so the rest read the cache ("with effective caching").
- ``per_solution_uncached``: the same verifier and instructions with ``prompt_cache=False``
  ("without caching"): every request pays the instructions in full.
- ``per_step``: one request per step (the problem, the steps so far, "grade the last step"), the
  way a step-by-step judge is often written; same cached instructions.
- ``batch``: the verifier with ``batch=True``: its requests really go through the fake Message
  Batches endpoint and are priced at the batch discount. The fake serves a batch's requests in order,
  so all but the first read the cache; the real API's cache hits in batches are best effort, so this
  row is the best case.
- ``per_solution_v1_rules``: the verifier's earlier instructions (the rules alone, ~150 tokens, no
  examples), too short to cache on any model: what the examples add to the bill.

Output tokens follow the verifier's estimate (`OUT_PER_STEP` a step verdict plus `OUT_PER_REPLY`
a reply), because the fake server's replies are terse. Input tokens are the fake's count at
`CHARS_PER_TOKEN` characters a token (Claude's tokenizer is not public).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from prm.label.prices import (
    BATCH_DISCOUNT,
    CACHE_MIN_TOKENS,
    CACHE_READ,
    CACHE_WRITE,
    CHARS_PER_TOKEN,
    PRICES,
    cacheable,
    cost_usd,
    price_table,
)

# The grading instructions of prompt version grade-steps-v1 (before the worked examples).
V1_RULES = """You are a meticulous grader of step-by-step math solutions.
You receive a problem, its reference final answer, and a candidate solution split into numbered
steps. Judge every step on its own merits: is it mathematically correct and a valid continuation of
the steps before it? A step that repeats an earlier mistake, or builds on a wrong earlier result,
is incorrect. Arithmetic must be exact. Restating the problem or planning is correct when it is
accurate. Then say whether the solution's final answer equals the reference answer.
Reply with JSON only, matching the schema: one entry per step, in order."""
SCHEMES = ("per_step", "per_solution_uncached", "per_solution", "batch", "per_solution_v1_rules")


def _run_scheme(scheme: str, items: Sequence[tuple[str, list[str], str | None]], model: str) -> tuple[list[dict], dict | None]:
    """Send ``items`` the way ``scheme`` does to a fresh fake API; the usage of every reply it
    reported, and the verifier's own estimate (printed before paid work) where a verifier ran."""
    import anthropic

    from prm.label.verify.claude import INSTRUCTIONS, SCHEMA, ClaudeVerifier, user_message
    from prm.testing.fake_anthropic import FakeAnthropic

    fake = FakeAnthropic()
    try:
        kw = dict(api_key="fake-key", base_url=fake.url, max_retries=0)
        if scheme in ("per_solution", "per_solution_uncached", "batch"):
            v = ClaudeVerifier(model, prompt_cache=scheme != "per_solution_uncached", batch=scheme == "batch", poll_interval=0.01, **kw)
            est = v.estimate(list(items))
            graded = v.grade_many(list(items), desc=scheme)
            if any(g is None for g in graded) or len(fake.requests) != len(items):
                raise RuntimeError(f"{scheme}: {len(fake.requests)} requests for {len(items)} solutions; expected one graded request each")
            if scheme == "batch" and fake.batch_creates == 0:
                raise RuntimeError("batch: no Message Batch was created")
            return list(fake.usages), est
        client = anthropic.Anthropic(**kw)
        fmt = {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}
        for problem, steps, gold in items:
            if scheme == "per_step":
                system = [{"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}]
                for k in range(1, len(steps) + 1):
                    client.messages.create(model=model, max_tokens=512, system=system, extra_body=fmt,
                                           messages=[{"role": "user", "content": user_message(problem, steps[:k], gold) + f"\n\nGrade step {k} only."}])
            else:  # per_solution_v1_rules
                client.messages.create(model=model, max_tokens=2048, system=[{"type": "text", "text": V1_RULES, "cache_control": {"type": "ephemeral"}}],
                                       extra_body=fmt, messages=[{"role": "user", "content": user_message(problem, steps, gold)}])
        return list(fake.usages), None
    finally:
        fake.close()


def label_cost_benchmark(items: Sequence[tuple[str, list[str], str | None]], model: str = "claude-sonnet-4-6") -> dict:
    from prm.label.verify.claude import INSTRUCTIONS, OUT_PER_REPLY, OUT_PER_STEP

    n_sol, n_steps = len(items), sum(len(st) for _, st, _ in items)
    out_tokens = {"per_step": n_steps * (OUT_PER_STEP + OUT_PER_REPLY)}
    rows: dict[str, dict] = {}
    for scheme in SCHEMES:
        usd, per_model = {}, {}
        for m in PRICES:  # caching depends on the model's minimum: each model is measured, not assumed
            usages, est = _run_scheme(scheme, items, m)
            tok = {"requests": len(usages), "input_tokens": sum(u["input_tokens"] for u in usages),
                   "cache_read_tokens": sum(u["cache_read_input_tokens"] for u in usages),
                   "cache_write_tokens": sum(u["cache_creation_input_tokens"] for u in usages),
                   "output_tokens": out_tokens.get(scheme, n_steps * OUT_PER_STEP + n_sol * OUT_PER_REPLY)}
            cost = cost_usd(m, tok["input_tokens"], tok["output_tokens"], tok["cache_read_tokens"], tok["cache_write_tokens"], scheme == "batch")
            usd[m] = cost / n_sol * 1000
            per_model[m] = {"cached": tok["cache_read_tokens"] > 0, **{k: x / n_sol for k, x in tok.items()},
                            **({"estimate_usd_per_1000_solutions": est["usd"] / n_sol * 1000} if est else {})}
        rows[scheme] = {**{k: v for k, v in per_model[model].items()}, "batch": scheme == "batch", "usd_per_1000_solutions": usd,
                        "by_model": per_model}
    cached_usd = {m: rows["per_solution"]["usd_per_1000_solutions"][m] for m in PRICES}
    uncached_usd = {m: rows["per_solution_uncached"]["usd_per_1000_solutions"][m] for m in PRICES}
    sys_tokens = len(INSTRUCTIONS) // CHARS_PER_TOKEN
    return {
        "solutions": n_sol, "steps": n_steps, "model_for_ratios": model, "schemes": rows,
        "price_table_usd_per_mtok": price_table(),
        "caching": {"grading_instructions_tokens": sys_tokens, "v1_rules_tokens": len(V1_RULES) // CHARS_PER_TOKEN,
                    "min_cacheable_prefix_tokens": CACHE_MIN_TOKENS, "cached_on": [m for m in PRICES if cacheable(m, sys_tokens)],
                    "usd_per_1000_solutions_with_caching": cached_usd, "usd_per_1000_solutions_without_caching": uncached_usd,
                    "without_over_with": {m: uncached_usd[m] / cached_usd[m] for m in PRICES}},
        "assumptions": {"chars_per_token": CHARS_PER_TOKEN, "output_tokens_per_step": OUT_PER_STEP, "output_tokens_per_reply": OUT_PER_REPLY,
                        "cache_read": CACHE_READ, "cache_write": CACHE_WRITE, "batch_discount": BATCH_DISCOUNT,
                        "token_counts": "input, cache-read and cache-write tokens as the loopback fake API reports them (its prompt cache "
                                        "follows Anthropic's documented rules); output tokens from the verifier's estimate",
                        "batch_row": "the verifier with batch=True, sent as Message Batches; cache reads as in a batch served in order "
                                     "(the real API's batch cache hits are best effort)"},
        "ratios": {"caching_without_over_with_usd": uncached_usd[model] / cached_usd[model],
                   "per_step_vs_per_solution_usd": rows["per_step"]["usd_per_1000_solutions"][model] / cached_usd[model],
                   "per_solution_vs_batch_usd": cached_usd[model] / rows["batch"]["usd_per_1000_solutions"][model],
                   "examples_with_caching_vs_v1_rules_usd": cached_usd[model] / rows["per_solution_v1_rules"]["usd_per_1000_solutions"][model]},
    }


def items_from_rows(rows: Sequence[dict]) -> list[tuple[str, list[str], str | None]]:
    return [(r["prompt"], list(r["completions"]), r.get("answer")) for r in rows]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(label_cost_benchmark([("What is 2+3?", ["2+3 = 5.", "The answer is 5."], "5")]), indent=2))
