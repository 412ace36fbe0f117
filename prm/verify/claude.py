"""Claude as a step verifier: ONE request per solution grades all its steps.

- The grading instructions are a system prompt marked for prompt caching, so repeated requests
  read them at a tenth of the price.
- The verdict is strict JSON (``output_config.format`` with a JSON schema); a reply that does not
  parse or does not have one verdict per step is re-asked once, then the solution is left
  unlabeled and counted (never guessed).
- Requests run concurrently (``max_concurrency``); the SDK retries 408/409/429/5xx/529 and
  connection errors with backoff, honouring ``retry-after``.
- Every answer is appended to an on-disk cache keyed by (model, prompt version, problem, steps,
  gold answer), so a rerun — after a crash or Ctrl+C — never pays twice.
- Token usage and cost are counted per run (`Usage`); the API key is read from the environment
  (or a ``.env`` file) and never written anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from prm.io import append_jsonl, iter_json_rows
from prm.verify.rules import Grade

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-6"
PROMPT_VERSION = "grade-steps-v1"
# USD per million tokens (input, output), from Anthropic's public price list; cache reads cost
# 0.1x input, 5-minute cache writes 1.25x input, the Message Batches API half of everything.
PRICES = {
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-opus-4-5": (5.0, 25.0),
}

INSTRUCTIONS = """You are a meticulous grader of step-by-step math solutions.
You receive a problem, its reference final answer, and a candidate solution split into numbered
steps. Judge every step on its own merits: is it mathematically correct and a valid continuation of
the steps before it? A step that repeats an earlier mistake, or builds on a wrong earlier result,
is incorrect. Arithmetic must be exact. Restating the problem or planning is correct when it is
accurate. Then say whether the solution's final answer equals the reference answer.
Reply with JSON only, matching the schema: one entry per step, in order."""

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


def load_dotenv_key() -> str | None:
    """``ANTHROPIC_API_KEY`` from the environment, else from a ``.env`` file in the working dir."""
    key = os.environ.get("ANTHROPIC_API_KEY")
    if key:
        return key
    try:
        from dotenv import dotenv_values
    except ImportError:
        return None
    return dotenv_values(".env").get("ANTHROPIC_API_KEY") if Path(".env").is_file() else None


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0  # answered from the on-disk cache, no request
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    unlabeled: int = 0  # solutions whose verdict could not be read after one re-ask

    def add(self, u: Any) -> None:
        self.requests += 1
        self.input_tokens += getattr(u, "input_tokens", 0) or 0
        self.output_tokens += getattr(u, "output_tokens", 0) or 0
        self.cache_read_tokens += getattr(u, "cache_read_input_tokens", 0) or 0
        self.cache_write_tokens += getattr(u, "cache_creation_input_tokens", 0) or 0

    def cost_usd(self, model: str, batch: bool = False) -> float | None:
        if model not in PRICES:
            return None
        pin, pout = PRICES[model]
        usd = (self.input_tokens * pin + self.cache_read_tokens * pin * 0.1 + self.cache_write_tokens * pin * 1.25 + self.output_tokens * pout) / 1e6
        return usd * (0.5 if batch else 1.0)

    def as_dict(self, model: str) -> dict:
        return {**self.__dict__, "model": model, "cost_usd": self.cost_usd(model)}


class BudgetExceeded(RuntimeError):
    """Raised when the next request would go past ``max_cost_usd``; all answers so far are cached."""


def estimate(items: Sequence[tuple[str, Sequence[str], str | None]], model: str) -> dict:
    """Expected calls, tokens and USD for grading ``items`` (about 4 characters a token; ~40
    output tokens a step). The grading prompt is cached after the first call."""
    chars = sum(len(user_message(p, st, g)) for p, st, g in items)
    out_tokens = sum(40 * len(st) + 20 for _, st, _ in items)
    u = Usage(requests=len(items), input_tokens=chars // 4, output_tokens=out_tokens,
              cache_read_tokens=max(0, len(items) - 1) * len(INSTRUCTIONS) // 4, cache_write_tokens=len(INSTRUCTIONS) // 4 if items else 0)
    return {"calls": len(items), "input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens, "output_tokens": out_tokens, "usd": u.cost_usd(model)}


def request_key(model: str, problem: str, steps: Sequence[str], gold: str | None) -> str:
    blob = json.dumps([model, PROMPT_VERSION, problem, list(steps), gold], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def user_message(problem: str, steps: Sequence[str], gold: str | None) -> str:
    numbered = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
    return f"Problem:\n{problem}\n\nReference final answer: {gold if gold is not None else '(not given)'}\n\nCandidate solution:\n{numbered}"


def parse_verdict(text: str, n_steps: int) -> tuple[list[bool], bool] | None:
    """Step verdicts and final-answer verdict from a reply, or None if it is not a complete one."""
    try:
        data = json.loads(text)
        steps = data["steps"]
        verdicts = [bool(s["correct"]) for s in steps if isinstance(s["correct"], bool)]
        final = data["final_answer_correct"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if len(steps) != n_steps or len(verdicts) != n_steps or not isinstance(final, bool):
        return None
    return verdicts, final


class ClaudeVerifier:
    """Grades solutions with Claude (see the module docstring)."""

    name = "claude"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 120.0,
        max_tokens: int = 2048,
        api_key: str | None = None,
        base_url: str | None = None,
        max_cost_usd: float | None = None,
        confirm: Any = None,
    ):
        import anthropic

        key = api_key or load_dotenv_key()
        if not key:
            raise RuntimeError("the claude verifier needs ANTHROPIC_API_KEY (environment or .env)")
        self._anthropic = anthropic
        # The async client is made inside each event loop (grade_many), not here: its connection
        # pool belongs to the loop that opened it.
        self._client_kw = dict(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        self.client: Any = None
        self.model, self.max_tokens, self.max_concurrency = model, max_tokens, max_concurrency
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        if self.cache_path and self.cache_path.is_file():
            self.cache = {row["key"]: row for _, row in iter_json_rows(self.cache_path)}
        self.usage = Usage()
        self.max_cost_usd = max_cost_usd
        self.confirm = confirm  # called with estimate(...) before paid work; returns False to stop

    async def _ask(self, messages: list[dict]) -> str:
        msg = await self.client.messages.create(
            model=self.model,
            max_tokens=self.max_tokens,
            system=[{"type": "text", "text": INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}],
            messages=messages,
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        )
        self.usage.add(msg.usage)
        return "".join(getattr(b, "text", "") for b in msg.content)

    async def agrade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade:
        key = request_key(self.model, problem, steps, gold)
        if key in self.cache:
            self.usage.cached += 1
            return self._grade(self.cache[key], len(steps))
        spent = self.usage.cost_usd(self.model)
        if self.max_cost_usd is not None and spent is not None and spent >= self.max_cost_usd:
            raise BudgetExceeded(f"spent ${spent:.2f} of --max_cost_usd {self.max_cost_usd}; every verdict so far is cached, rerun with a larger budget to continue")
        messages = [{"role": "user", "content": user_message(problem, steps, gold)}]
        text = await self._ask(messages)
        verdict = parse_verdict(text, len(steps))
        if verdict is None:  # one re-ask, showing what was wrong
            messages += [
                {"role": "assistant", "content": text or "(empty)"},
                {"role": "user", "content": f"That reply was not valid JSON with exactly {len(steps)} step verdicts. Reply again with JSON only."},
            ]
            text = await self._ask(messages)
            verdict = parse_verdict(text, len(steps))
        row = {"key": key, "model": self.model, "prompt_version": PROMPT_VERSION,
               "steps": verdict[0] if verdict else None, "final_answer_correct": verdict[1] if verdict else None}
        self.cache[key] = row
        if self.cache_path:
            append_jsonl(self.cache_path, row)
        return self._grade(row, len(steps))

    def _grade(self, row: dict, n: int) -> Grade:
        if row["steps"] is None:
            self.usage.unlabeled += 1
            return Grade([None] * n, None, [["unlabeled: no valid verdict"]] * n)
        return Grade(list(row["steps"]), row["final_answer_correct"])

    def grade_many(self, items: Sequence[tuple[str, Sequence[str], str | None]], desc: str = "grading") -> list[Grade]:
        """Grade (problem, steps, gold) items concurrently; results in input order. Before paid
        work, ``confirm`` (if set) sees the estimate of the uncached part and may stop it."""
        todo = [it for it in items if request_key(self.model, *it) not in self.cache]
        if todo and self.confirm is not None and not self.confirm(estimate(todo, self.model)):
            raise BudgetExceeded("stopped before paid work")

        async def run() -> list[Grade]:
            sem = asyncio.Semaphore(self.max_concurrency)
            bar = tqdm(total=len(items), desc=desc, unit="solution")
            self.client = self._anthropic.AsyncAnthropic(**self._client_kw)

            async def one(item: tuple) -> Grade:
                async with sem:
                    g = await self.agrade(*item)
                bar.update()
                return g

            try:
                return await asyncio.gather(*(one(it) for it in items))
            finally:
                bar.close()
                await self.client.close()

        return asyncio.run(run())

    def grade(self, problem: str, steps: Sequence[str], gold: str | None) -> Grade:
        return self.grade_many([(problem, steps, gold)])[0]
