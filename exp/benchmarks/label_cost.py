"""What Claude grading costs per labeled solution: requests and tokens, measured against the
loopback fake Messages API (`prm.testing.fake_anthropic`), converted to USD per 1000 solutions.

Schemes:

- ``per_step``: one request per step (the problem, the steps so far, "grade the last step"),
  the way a step-by-step judge is often written.
- ``per_solution``: one request grades all steps (`prm.label.verify.claude.ClaudeVerifier`, the
  project's verifier), without prompt caching.
- ``per_solution_cached``: the same with the grading instructions cached (``cache_control``):
  reads cost 0.1x input, the first write 1.25x.
- ``batch``: ``per_solution_cached`` sent through the Message Batches API (half price).

Requests are counted at the server. Input tokens are counted from the request bodies the server
received, at 4 characters a token (Claude's tokenizer is not public; the same rule as
`prm.label.verify.claude.estimate`); output tokens follow the estimator's model (40 a step verdict plus
20 a reply), because the fake server's replies are terse. Price table: `prm.label.verify.claude.PRICES`
(USD per million input/output tokens). Caveat: Anthropic caches only prefixes of at least 1024
tokens (Sonnet/Opus; more for Haiku); the grading instructions alone are shorter, so the cached
rows hold only when the cached prefix is long enough (e.g. with worked examples in it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

CHARS_PER_TOKEN = 4
OUT_PER_STEP, OUT_PER_REPLY = 40, 20
CACHE_READ, CACHE_WRITE, BATCH = 0.1, 1.25, 0.5


def _fake_server() -> Any:
    from prm.testing.fake_anthropic import FakeAnthropic

    return FakeAnthropic()


def _body_chars(body: dict) -> tuple[int, int]:
    """(characters of the system prompt, characters of the messages) of one request body."""
    system = body.get("system") or ""
    sys_chars = sum(len(b.get("text", "")) for b in system) if isinstance(system, list) else len(system)
    msg_chars = 0
    for m in body["messages"]:
        c = m["content"]
        msg_chars += len(c) if isinstance(c, str) else sum(len(b.get("text", "")) for b in c)
    return sys_chars, msg_chars


def label_cost_benchmark(items: Sequence[tuple[str, list[str], str | None]], model: str = "claude-sonnet-4-6") -> dict:
    import anthropic

    from prm.label.verify import claude as claude_mod
    from prm.label.verify.claude import (
        INSTRUCTIONS,
        PRICES,
        SCHEMA,
        ClaudeVerifier,
        user_message,
    )

    n_sol, n_steps = len(items), sum(len(st) for _, st, _ in items)
    fake = _fake_server()
    try:
        # per solution: the project's verifier, every request really sent
        v = ClaudeVerifier(model, api_key="fake-key", base_url=fake.url, max_retries=0)
        v.grade_many(list(items), desc="per solution")
        sol_bodies = list(fake.requests)
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

    def tokens(bodies: list[dict], cached: bool, out_tokens: int) -> dict:
        sys_t = sum(_body_chars(b)[0] for b in bodies) // CHARS_PER_TOKEN
        msg_t = sum(_body_chars(b)[1] for b in bodies) // CHARS_PER_TOKEN
        one_sys = _body_chars(bodies[0])[0] // CHARS_PER_TOKEN if bodies else 0
        if cached:  # the instructions: written once, read by every later request
            return {"requests": len(bodies), "input_tokens": msg_t, "cache_write_tokens": one_sys, "cache_read_tokens": sys_t - one_sys, "output_tokens": out_tokens}
        return {"requests": len(bodies), "input_tokens": sys_t + msg_t, "cache_write_tokens": 0, "cache_read_tokens": 0, "output_tokens": out_tokens}

    out_sol = n_steps * OUT_PER_STEP + n_sol * OUT_PER_REPLY
    out_step = n_steps * (OUT_PER_STEP + OUT_PER_REPLY)
    batch_in_code = any(hasattr(ClaudeVerifier, a) for a in ("grade_batch", "submit_batch")) or hasattr(claude_mod, "BATCH_DISCOUNT")
    schemes = {
        "per_step": (tokens(step_bodies, False, out_step), 1.0),
        "per_solution": (tokens(sol_bodies, False, out_sol), 1.0),
        "per_solution_cached": (tokens(sol_bodies, True, out_sol), 1.0),
        "batch": (tokens(sol_bodies, True, out_sol), BATCH),
    }
    rows = {}
    for name, (t, factor) in schemes.items():
        usd = {}
        for m, (pin, pout) in PRICES.items():
            cost = (t["input_tokens"] * pin + t["cache_write_tokens"] * pin * CACHE_WRITE + t["cache_read_tokens"] * pin * CACHE_READ + t["output_tokens"] * pout) / 1e6
            usd[m] = cost * factor / n_sol * 1000
        rows[name] = {**{k: v / n_sol for k, v in t.items()}, "usd_per_1000_solutions": usd}
    return {
        "solutions": n_sol, "steps": n_steps, "model_for_ratios": model, "schemes": rows,
        "price_table_usd_per_mtok": {m: {"input": p[0], "output": p[1], "cache_read": p[0] * CACHE_READ, "cache_write_5m": p[0] * CACHE_WRITE,
                                         "batch_input": p[0] * BATCH, "batch_output": p[1] * BATCH} for m, p in PRICES.items()},
        "assumptions": {"chars_per_token": CHARS_PER_TOKEN, "output_tokens_per_step": OUT_PER_STEP, "output_tokens_per_reply": OUT_PER_REPLY,
                        "cache_read": CACHE_READ, "cache_write": CACHE_WRITE, "batch_discount": BATCH,
                        "batch_row": "measured requests of the per-solution verifier priced at the documented 50% Message Batches discount"
                                     + ("" if batch_in_code else " (prm.label.verify.claude had no batch submission when this ran)"),
                        "min_cacheable_prefix_tokens": 1024},
        "ratios": {"per_step_vs_batch_usd": rows["per_step"]["usd_per_1000_solutions"][model] / rows["batch"]["usd_per_1000_solutions"][model],
                   "per_step_vs_per_solution_usd": rows["per_step"]["usd_per_1000_solutions"][model] / rows["per_solution"]["usd_per_1000_solutions"][model]},
    }


def items_from_rows(rows: Sequence[dict]) -> list[tuple[str, list[str], str | None]]:
    return [(r["prompt"], list(r["completions"]), r.get("answer")) for r in rows]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(label_cost_benchmark([("What is 2+3?", ["2+3 = 5.", "The answer is 5."], "5")]), indent=2))
