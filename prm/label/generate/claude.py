"""Claude as the solution generator of Method 2.

Sampling the same prompt several times gives near-copies of one solution, which teach a PRM
little, and the Messages API of SDK 2.x has no temperature/top-p knobs. Diversity therefore comes
from the prompt: rollout ``i`` of a problem asks for approach
``APPROACHES[i % len(APPROACHES)]`` (define variables first, work backwards, estimate then
compute, ...). One of them asks for a quick first-draft solution without double-checking, the
way a student writes: that is where natural mistakes come from, without asking for any.

Each (model, prompt version, problem, rollout index) is one cached request (`prm.label.claude.ClaudeJob`:
concurrency, retries, budget, the Message Batches API), so a rerun never pays twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from prm.label.claude import DEFAULT_MODEL, ClaudeJob

PROMPT_VERSION = "solve-v1"
INSTRUCTIONS = """Solve the math problem you are given, step by step.
Write one step per paragraph (separate steps with a blank line); each step does one thing: states
a fact from the problem, or performs one computation written out as an equation.
End with a final line of the form 'The answer is: N'. Write nothing after it."""

APPROACHES = (
    "Define what each quantity is first, then compute.",
    "Work directly through the problem in the order it is told.",
    "Write a quick first-draft solution, the way a student would on a timed test, without double-checking.",
    "Work backwards from what is asked.",
    "Estimate the answer first, then compute it exactly.",
    "Use as few steps as possible.",
)


def request_key(model: str, problem: str, index: int) -> str:
    blob = json.dumps([model, PROMPT_VERSION, problem, index], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def user_message(problem: str, index: int) -> str:
    return f"Approach {index + 1}: {APPROACHES[index % len(APPROACHES)]}\n\nProblem:\n{problem}"


class ClaudeGenerator(ClaudeJob):
    """Writes ``n`` solutions per problem with Claude (see the module docstring). Items are
    (problem, rollout index); `generate` has the local generator's signature."""

    prompt_version = PROMPT_VERSION
    unit = "solution"  # one request writes one solution

    def __init__(self, model: str = DEFAULT_MODEL, *, max_tokens: int = 1024, **kw: Any):
        super().__init__(model, **kw)
        self.max_tokens = max_tokens

    def key(self, item: tuple[str, int]) -> str:
        return request_key(self.model, item[0], item[1])

    def messages(self, item: tuple[str, int]) -> list[dict]:
        return [{"role": "user", "content": user_message(*item)}]

    def params(self, messages: list[dict]) -> dict:
        return {"model": self.model, "max_tokens": self.max_tokens, "messages": messages,
                "system": [{"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}]}

    def parse(self, text: str, item: tuple[str, int]) -> str | None:
        return text.strip() or None

    def estimate_one(self, item: tuple[str, int]) -> tuple[int, int]:
        return len(user_message(*item)) // 4, self.max_tokens // 3  # solutions use about a third of the limit

    def system_tokens(self) -> int:
        return len(INSTRUCTIONS) // 4

    def generate(self, problems: Sequence[str], n: int = 1, desc: str = "generating (claude)", start: int = 0) -> list[list[str]]:
        """``n`` solutions per problem (rollout indices ``start`` .. ``start + n - 1``). A solution
        whose request failed (empty reply, or an errored batch request) is left out."""
        items = [(p, start + i) for p in problems for i in range(n)]
        texts = self.run(items, desc)
        return [[t for t in texts[j * n : (j + 1) * n] if t] for j in range(len(problems))]
