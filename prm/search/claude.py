"""Claude as a search generator (``claude``): the next step of a partial solution, or the rest of it.

The Messages API of SDK 2.x has no sampling knobs, so, as for Method 2's solutions
(`prm.label.generate.claude`), diversity comes from the prompt: continuation ``k`` asks for approach
``APPROACHES[k % len(APPROACHES)]`` (k counts the continuations of one call). Every request is a cached `ClaudeJob` item keyed by the
problem, the steps so far, the continuation index and the call number on that problem, so a rerun
of the same search pays for nothing twice while a repeated expansion of one partial (beam search
duplicates its survivors) asks again. ``tokens`` counts the output tokens of the requests sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from prm.answers import extract_answer
from prm.label.claude import DEFAULT_MODEL, ClaudeJob
from prm.label.generate.claude import APPROACHES
from prm.search.generate import GENERATORS, Partial

PROMPT_VERSION = "search-step-v1"
INSTRUCTIONS = """You continue step-by-step solutions of math problems.
Each step does one thing: states a fact from the problem, or performs one computation written out as
an equation. The last step has the form 'The answer is: N'.
When asked for the next step, write exactly one step on one line and nothing else.
When asked to finish, write the remaining steps one per line, ending with 'The answer is: N'."""


def user_message(problem: str, steps: Sequence[str], index: int, to_end: bool) -> str:
    so_far = "\n".join(steps) if steps else "(nothing yet)"
    ask = "Finish the solution." if to_end else "Write the next step only."
    return f"Approach {index + 1}: {APPROACHES[index % len(APPROACHES)]}\n\nSolution so far:\n{so_far}\n\n{ask}\n\nProblem:\n{problem}"


def _lines(text: str) -> list[str]:
    return [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n|\n", text) if p.strip()]


@GENERATORS.register("claude")
class ClaudeStepGenerator(ClaudeJob):
    """Continuations from Claude with the search generators' interface (`prm.search.generate.Generator`)."""

    prompt_version = PROMPT_VERSION

    def __init__(self, model: str = DEFAULT_MODEL, *, max_step_tokens: int = 128, max_tokens: int = 1024, **kw: Any):
        kw = {k: v for k, v in kw.items() if k not in ("temperature", "top_p", "seed")}  # no sampling knobs in the API
        super().__init__(model, **kw)
        self.max_step_tokens, self.max_tokens = max_step_tokens, max_tokens
        self.tokens = 0
        self._calls: dict[str, int] = {}

    def reset(self) -> None:
        self._calls.clear()

    # --- ClaudeJob hooks; an item is (problem, steps, index, call, to_end)
    def key(self, item: tuple) -> str:
        blob = json.dumps([self.model, PROMPT_VERSION, item[0], list(item[1]), *item[2:]], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def messages(self, item: tuple) -> list[dict]:
        problem, steps, index, _, to_end = item
        return [{"role": "user", "content": user_message(problem, steps, index, to_end)}]

    def params(self, messages: list[dict]) -> dict:
        to_end = "Finish the solution." in messages[0]["content"]
        return {"model": self.model, "max_tokens": self.max_tokens if to_end else self.max_step_tokens, "messages": messages,
                "system": [{"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}]}

    def parse(self, text: str, item: tuple) -> list[str] | None:
        lines = _lines(text)
        if not lines:
            return None
        return lines if item[4] else lines[:1]  # a reply with more than the next step keeps its first

    def estimate_one(self, item: tuple) -> tuple[int, int]:
        return len(user_message(item[0], item[1], item[2], item[4])) // 4, (self.max_tokens // 3 if item[4] else self.max_step_tokens // 2)

    def system_tokens(self) -> int:
        return len(INSTRUCTIONS) // 4

    # --- the search interface
    def expand(self, problem: str, parents: Sequence[Partial], counts: Sequence[int], *, to_end: bool = False) -> list[list[Partial]]:
        call = self._calls.get(problem, 0)
        self._calls[problem] = call + 1
        # the approach index runs over the whole call, so that equal partials still get different prompts
        rows = [p for p, c in zip(parents, counts) for _ in range(c)]
        items = [(problem, tuple(p.steps), k, call, to_end) for k, p in enumerate(rows)]
        before = self.usage.output_tokens
        replies = self.run(items, desc="claude steps")
        self.tokens += self.usage.output_tokens - before
        per = (self.usage.output_tokens - before) // max(1, len(items))
        out: list[list[Partial]] = [[] for _ in parents]
        j = 0
        for i, (p, c) in enumerate(zip(parents, counts)):
            for _ in range(c):
                new = replies[j] or []
                j += 1
                steps = list(p.steps) + new
                done = to_end or not new or extract_answer("\n".join(new)) is not None  # a failed request ends that path
                out[i].append(Partial(steps=steps, done=done, tokens=p.tokens + per))
        return out
