"""What Claude grading costs per labeled solution: requests and tokens, measured against the
loopback fake Messages API (`prm.testing.fake_anthropic`), priced with the project's one price
table and cost function (`prm.label.prices`), as USD per 1000 solutions.

Schemes:

- ``per_step``: one request per step (the problem, the steps so far, "grade the last step"),
  the way a step-by-step judge is often written.
- ``per_solution``: the project's verifier (`prm.label.verify.claude.ClaudeVerifier`), one request
  grades all steps of a solution.
- ``per_solution_cached``: the same if its grading instructions were served from the prompt cache
  (reads 0.1x input, the first write 1.25x). Anthropic caches only prefixes of at least
  `prm.label.prices.CACHE_MIN_TOKENS` (1024-4096 by model); the instructions alone are shorter, so
  this row holds only once the cached prefix grows past that (e.g. with worked grading examples).
- ``batch``: the verifier with ``batch=True``: its requests really go through the fake Message
  Batches endpoint (submit, poll, read results by ``custom_id``) and are priced at the batch
  discount, with prompt caching applied only where the prefix is long enough to be cached.

Requests are counted at the server. Input tokens are counted from the request bodies the server
received, at `prm.label.prices.CHARS_PER_TOKEN` characters a token (Claude's tokenizer is not
public); output tokens follow the verifier's estimate (`OUT_PER_STEP` a step verdict plus
`OUT_PER_REPLY` a reply), because the fake server's replies are terse.
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


def _body_chars(body: dict) -> tuple[int, int]:
    """(characters of the system prompt, characters of the messages) of one request body."""
    system = body.get("system") or ""
    sys_chars = sum(len(b.get("text", "")) for b in system) if isinstance(system, list) else len(system)
    msg_chars = 0
    for m in body["messages"]:
        c = m["content"]
        msg_chars += len(c) if isinstance(c, str) else sum(len(b.get("text", "")) for b in c)
    return sys_chars, msg_chars


def _tokens(bodies: list[dict], out_tokens: int, cached: bool) -> dict:
    """Token counts of ``bodies``; with ``cached`` the system prompt is written once and read after."""
    sys_t = sum(_body_chars(b)[0] for b in bodies) // CHARS_PER_TOKEN
    msg_t = sum(_body_chars(b)[1] for b in bodies) // CHARS_PER_TOKEN
    one_sys = _body_chars(bodies[0])[0] // CHARS_PER_TOKEN if bodies else 0
    if cached:
        return {"requests": len(bodies), "input_tokens": msg_t, "cache_write_tokens": one_sys, "cache_read_tokens": sys_t - one_sys, "output_tokens": out_tokens}
    return {"requests": len(bodies), "input_tokens": sys_t + msg_t, "cache_write_tokens": 0, "cache_read_tokens": 0, "output_tokens": out_tokens}


def label_cost_benchmark(items: Sequence[tuple[str, list[str], str | None]], model: str = "claude-sonnet-4-6") -> dict:
    import anthropic

    from prm.label.verify.claude import INSTRUCTIONS, OUT_PER_REPLY, OUT_PER_STEP, SCHEMA, ClaudeVerifier, user_message
    from prm.testing.fake_anthropic import FakeAnthropic

    n_sol, n_steps = len(items), sum(len(st) for _, st, _ in items)
    fake = FakeAnthropic()
    try:
        # per solution: the project's verifier, every request really sent
        v = ClaudeVerifier(model, api_key="fake-key", base_url=fake.url, max_retries=0)
        v.grade_many(list(items), desc="per solution")
        sol_bodies = list(fake.requests)
        fake.requests.clear()
        # batch: the same verifier through the Message Batches endpoint
        vb = ClaudeVerifier(model, api_key="fake-key", base_url=fake.url, max_retries=0, batch=True, poll_interval=0.01)
        graded = vb.grade_many(list(items), desc="batch")
        batch_bodies, batches = list(fake.requests), fake.batch_creates
        fake.requests.clear()
        # per step: one request per step, same instructions, the steps so far
        client = anthropic.Anthropic(api_key="fake-key", base_url=fake.url, max_retries=0)
        for problem, steps, gold in items:
            for k in range(1, len(steps) + 1):
                client.messages.create(model=model, max_tokens=512, system=INSTRUCTIONS,
                                       messages=[{"role": "user", "content": user_message(problem, steps[:k], gold) + f"\n\nGrade step {k} only."}],
                                       extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
        step_bodies = list(fake.requests)
    finally:
        fake.close()
    if batches == 0 or len(batch_bodies) != n_sol or any(g is None for g in graded):
        raise RuntimeError(f"batch run: {batches} batches, {len(batch_bodies)} requests for {n_sol} solutions; expected one graded request each")

    out_sol = n_steps * OUT_PER_STEP + n_sol * OUT_PER_REPLY
    out_step = n_steps * (OUT_PER_STEP + OUT_PER_REPLY)
    sys_tokens = _body_chars(sol_bodies[0])[0] // CHARS_PER_TOKEN
    # (request bodies, output tokens, cache assumed?, batch?); None: cached only where the prefix is long enough
    schemes: dict[str, tuple[list[dict], int, bool | None, bool]] = {
        "per_step": (step_bodies, out_step, False, False),
        "per_solution": (sol_bodies, out_sol, None, False),
        "per_solution_cached": (sol_bodies, out_sol, True, False),
        "batch": (batch_bodies, out_sol, None, True),
    }
    rows = {}
    for name, (bodies, out, cached, batch) in schemes.items():
        usd = {}
        for m in PRICES:  # whether the prompt cache applies depends on the model's minimum prefix
            t = _tokens(bodies, out, cacheable(m, sys_tokens) if cached is None else cached)
            usd[m] = cost_usd(m, t["input_tokens"], t["output_tokens"], t["cache_read_tokens"], t["cache_write_tokens"], batch) / n_sol * 1000
        tok = _tokens(bodies, out, cacheable(model, sys_tokens) if cached is None else cached)  # per solution, for model_for_ratios
        rows[name] = {**{k: x / n_sol for k, x in tok.items()}, "batch": batch, "usd_per_1000_solutions": usd}
    return {
        "solutions": n_sol, "steps": n_steps, "model_for_ratios": model, "schemes": rows,
        "price_table_usd_per_mtok": price_table(),
        "assumptions": {"chars_per_token": CHARS_PER_TOKEN, "output_tokens_per_step": OUT_PER_STEP, "output_tokens_per_reply": OUT_PER_REPLY,
                        "cache_read": CACHE_READ, "cache_write": CACHE_WRITE, "batch_discount": BATCH_DISCOUNT,
                        "grading_instructions_tokens": sys_tokens, "min_cacheable_prefix_tokens": CACHE_MIN_TOKENS,
                        "batch_row": f"the verifier with batch=True: {len(batch_bodies)} requests sent in {batches} Message Batch(es) to the fake "
                                     "server, priced at the batch discount; the instructions are cached only where they reach the model's minimum",
                        "per_solution_cached_row": "hypothetical: the instructions served from the prompt cache, which needs a prefix of at least "
                                                   "min_cacheable_prefix_tokens"},
        "ratios": {"per_step_vs_batch_usd": rows["per_step"]["usd_per_1000_solutions"][model] / rows["batch"]["usd_per_1000_solutions"][model],
                   "per_step_vs_per_solution_usd": rows["per_step"]["usd_per_1000_solutions"][model] / rows["per_solution"]["usd_per_1000_solutions"][model]},
    }


def items_from_rows(rows: Sequence[dict]) -> list[tuple[str, list[str], str | None]]:
    return [(r["prompt"], list(r["completions"]), r.get("answer")) for r in rows]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(label_cost_benchmark([("What is 2+3?", ["2+3 = 5.", "The answer is 5."], "5")]), indent=2))
