"""Claude as a step verifier: ONE request per solution grades all its steps.

- The grading instructions are a system prompt marked for prompt caching (``cache_control`` on its
  one block, the end of the prefix every request shares). Anthropic caches only prefixes of at least
  a model-dependent length (`prm.label.prices.CACHE_MIN_TOKENS`: 1,024-4,096 tokens), so the rules
  come with 20 worked grading examples written for this project (`prm.label.verify.claude_examples`):
  ~4,650 tokens at `CHARS_PER_TOKEN` (5,850 and 6,600 with MiniLM's WordPiece and SmolLM2's BPE
  tokenizers), past the largest minimum of every priced model, so every request after the first
  reads them at 0.1x the input price. For a model whose minimum they miss, `estimate` counts them
  in full for every request. ``prompt_cache=False`` sends the same instructions without the mark
  (the label_cost benchmark's "without caching" row).
- The verdict is strict JSON (``output_config.format`` with a JSON schema); a reply that does not
  parse or does not have one verdict per step is re-asked once, then the solution is left
  unlabeled and counted (never guessed).
- The answer cache is keyed by (model, prompt version, problem, steps, gold answer).
- Concurrency, retries, the on-disk cache, budget, usage/cost and the Message Batches API
  (``batch=True``) come from `prm.label.claude.ClaudeJob`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from prm.label.claude import (
    DEFAULT_MODEL,
    BudgetExceeded,
    ClaudeJob,
    Usage,
    estimate_usage,
    load_dotenv_key,
    loads_or_none,
)
from prm.label.prices import CHARS_PER_TOKEN
from prm.label.verify.base import Grade, Item, VerifierBase
from prm.label.verify.claude_examples import EXAMPLES

__all__ = ["DEFAULT_MODEL", "BudgetExceeded", "ClaudeVerifier", "Usage", "estimate", "load_dotenv_key", "parse_verdict"]

PROMPT_VERSION = "grade-steps-v2"  # v2: rules spelled out, worked examples (v1 had ~150 tokens of rules)
OUT_PER_STEP, OUT_PER_REPLY = 40, 20  # expected output tokens: a step's verdict with its reason; the rest of a reply
RULES = """You are a meticulous grader of step-by-step math solutions. Your verdicts become training
labels for a process reward model, so each verdict must say whether that one step is right.

You receive a problem, its reference final answer, and a candidate solution split into numbered
steps. Judge every step on its own merits: is it mathematically correct and a valid continuation of
the steps before it?

Conventions:
1. Arithmetic must be exact. Recompute every number a step states; a step with a wrong result is
   incorrect even if the slip is small.
2. A step is incorrect when it uses the wrong operation or the wrong quantity, misreads the problem,
   or claims something that does not follow, even when its arithmetic is exact.
3. A step that repeats an earlier mistake, or builds on a wrong earlier result, is incorrect, even
   when its own computation is right. Once the chain is broken, later steps that depend on it are
   incorrect; a later step that does not depend on the broken part is judged on its own.
4. Restating the problem, naming unknowns and planning are correct when they are accurate.
5. The reference answer tells you the target, not the path: never mark a step wrong only because
   it takes another route, and never mark a step right only because the final answer matches.
6. A final-answer step ("The answer is: ...") is correct when the stated answer follows from the
   correct steps before it and equals the reference answer.
7. final_answer_correct is true only when the solution states a final answer equal to the
   reference answer (numerically equal values in any form count as equal); a solution that stops
   without stating an answer gets false.
8. Keep each reason to one short sentence that names the error (the right value where there is
   one) or why the step holds.

Reply with JSON only, matching the schema: one entry per step, in order, with the step number,
"correct" (true or false) and the reason, then final_answer_correct.

Worked examples (the candidate as you will receive it, then the reply expected from you):"""


def render_examples() -> str:
    """The worked examples, each as the user message of a real request and the JSON reply it expects."""
    parts = []
    for i, ex in enumerate(EXAMPLES, 1):
        reply = {"steps": [{"step": k + 1, "correct": c, "reason": r} for k, (c, r) in enumerate(ex["verdicts"])],
                 "final_answer_correct": ex["final"]}
        parts.append(f"### Example {i} ({ex['teaches']})\n\n{user_message(ex['problem'], ex['steps'], ex['gold'])}\n\n"
                     f"Expected reply:\n{json.dumps(reply, ensure_ascii=False)}")
    return "\n\n".join(parts)


SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"step": {"type": "integer"}, "correct": {"type": "boolean"}, "reason": {"type": "string"}},
                "required": ["step", "correct", "reason"],
                "additionalProperties": False,
            },
        },
        "final_answer_correct": {"type": "boolean"},
    },
    "required": ["steps", "final_answer_correct"],
    "additionalProperties": False,
}


def _tokens(item: tuple[str, Sequence[str], str | None]) -> tuple[int, int]:
    """(input, output) tokens of one grading request: ~4 characters a token, `OUT_PER_STEP` output
    tokens a step verdict plus `OUT_PER_REPLY` a reply."""
    problem, steps, gold = item
    return len(user_message(problem, steps, gold)) // CHARS_PER_TOKEN, OUT_PER_STEP * len(steps) + OUT_PER_REPLY


def estimate(items: Sequence[tuple[str, Sequence[str], str | None]], model: str, batch: bool = False) -> dict:
    """Expected calls, tokens and USD for grading ``items``."""
    return estimate_usage([_tokens(it) for it in items], len(INSTRUCTIONS) // CHARS_PER_TOKEN, model, batch)


def request_key(model: str, problem: str, steps: Sequence[str], gold: str | None) -> str:
    blob = json.dumps([model, PROMPT_VERSION, problem, list(steps), gold], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def user_message(problem: str, steps: Sequence[str], gold: str | None) -> str:
    numbered = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
    return f"Problem:\n{problem}\n\nReference final answer: {gold if gold is not None else '(not given)'}\n\nCandidate solution:\n{numbered}"


INSTRUCTIONS = RULES + "\n\n" + render_examples() + "\n\nNow grade the candidate solution you receive in the same way."


def parse_verdict(text: str, n_steps: int) -> tuple[list[bool], bool] | None:
    """Step verdicts and final-answer verdict from a reply, or None if it is not a complete one."""
    data = loads_or_none(text)
    try:
        steps = data["steps"]
        verdicts = [bool(s["correct"]) for s in steps if isinstance(s["correct"], bool)]
        final = data["final_answer_correct"]
    except (KeyError, TypeError):
        return None
    if len(steps) != n_steps or len(verdicts) != n_steps or not isinstance(final, bool):
        return None
    return verdicts, final



class ClaudeVerifier(ClaudeJob, VerifierBase):
    """Grades (problem, steps, gold answer) items with Claude (see the module docstring)."""

    name = "claude"
    prompt_version = PROMPT_VERSION
    unit = "solution"  # one request grades one solution

    def __init__(self, model: str = DEFAULT_MODEL, *, max_tokens: int = 2048, prompt_cache: bool = True, **kw: Any):
        super().__init__(model, **kw)
        self.max_tokens, self.prompt_cache = max_tokens, prompt_cache

    def key(self, item: tuple) -> str:
        return request_key(self.model, *item)

    def messages(self, item: tuple) -> list[dict]:
        return [{"role": "user", "content": user_message(*item)}]

    def params(self, messages: list[dict]) -> dict:
        return {"model": self.model, "max_tokens": self.max_tokens, "messages": messages,
                "system": [{"type": "text", "text": INSTRUCTIONS, **({"cache_control": {"type": "ephemeral"}} if self.prompt_cache else {})}],
                "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}

    def parse(self, text: str, item: tuple) -> dict | None:
        verdict = parse_verdict(text, len(item[1]))
        return None if verdict is None else {"steps": verdict[0], "final_answer_correct": verdict[1]}

    def reask(self, item: tuple, messages: list[dict], text: str) -> list[dict]:
        return messages + [
            {"role": "assistant", "content": text or "(empty)"},
            {"role": "user", "content": f"That reply was not valid JSON with exactly {len(item[1])} step verdicts. Reply again with JSON only."},
        ]

    def estimate_one(self, item: tuple) -> tuple[int, int]:
        return _tokens(item)

    def system_tokens(self) -> int:
        return len(INSTRUCTIONS) // CHARS_PER_TOKEN

    def result(self, row: dict, item: tuple) -> Grade:
        v, n = row["value"], len(item[1])
        if v is None:
            return Grade([None] * n, None, [["unlabeled: no valid verdict"]] * n)
        return Grade(list(v["steps"]), v["final_answer_correct"])

    def grade_many(self, items: Sequence[Item], desc: str = "grading") -> list[Grade | None]:
        """Grade (problem, steps, gold) items; results in input order. Before paid work, ``confirm``
        (if set) sees the estimate of the uncached part and may stop it. None: a batch request
        that errored or expired (not cached; a rerun asks again)."""
        return self.run(items, desc)

    def api_usage(self) -> dict:
        return self.usage.as_dict(self.model)
