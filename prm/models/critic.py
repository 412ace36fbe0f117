"""An LLM critic behind the PRM interface: Claude as a step judge for evaluation, best-of-N and search.

``load_prm("claude:<model id>")`` (so ``--model claude:<id>`` in exp/evaluate.py, ``--prm
claude:<id>`` in exp/search.py) gives a `ClaudeCritic`. It is measured the way ProcessBench measures
critic models (Zheng et al. 2024, the authors' ``critique_template.txt``): the solution's steps are
tagged ``<paragraph_i>`` and indexed from 0 inside their exact prompt, which asks for the index of
the paragraph where the earliest error occurs, or -1, in ``\\boxed{}``; the last boxed integer of
the reply is the prediction. No system prompt is added (so there is no prompt prefix to cache).

Step scores (P(step correct), one per step, what every PRM returns): with one sample, 1.0 for the
steps before the reported index and 0.0 from it on (all 1.0 for -1), so any threshold in (0, 1]
reads back the critic's own index. With ``samples`` k > 1 the same request is sent k times (the API
samples at its default temperature) and a step's score is the share of replies whose earliest error
lies after it: a probability; threshold 0.5 then takes the first step that a majority places at or
after the error (the median index, not ProcessBench's vote on the mode).

A reply without a valid index is re-asked once; if it still has none the solution gets no score
(an empty list), which ProcessBench's metrics count as a wrong prediction (`prm.eval.processbench`).

Every reply is kept in an on-disk cache as it arrives (`prm.label.claude.ClaudeJob`: concurrency,
retries, budget, one-line API errors), so a rerun pays for nothing twice. Paid work is confirmed
first: before the first uncached request the estimate is printed (`prm.label.claude.confirm_spend`)
and needs ``yes`` or a typed 'y'; later calls of the same critic (search scores as it goes) stay
within ``max_cost_usd``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prm.label.claude import ClaudeJob, confirm_spend
from prm.label.prices import CHARS_PER_TOKEN

log = logging.getLogger(__name__)

PREFIX = "claude:"
PROMPT_VERSION = "processbench-critic-v1"
# Expected output tokens: a critic reviews paragraph by paragraph before it answers.
OUT_PER_PARAGRAPH, OUT_PER_REPLY = 60, 40
# ProcessBench's critic prompt (code/templates/critique_template.txt of QwenLM/ProcessBench).
TEMPLATE = """The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed from 0):

[Math Problem]

{problem}

[Solution]

{tagged_response}

Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the index of -1 (which typically denotes "not found").

Please put your final answer (i.e., the index) in \\boxed{{}}."""
BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def is_critic(name: str) -> bool:
    """Whether a model argument names an LLM critic (``claude:<model id>``)."""
    return str(name).startswith(PREFIX)


def critic_prompt(problem: str, steps: Sequence[str]) -> str:
    """ProcessBench's critic prompt for one solution (paragraphs tagged and indexed from 0)."""
    tagged = "\n\n".join(f"<paragraph_{i}>\n{s}\n</paragraph_{i}>" for i, s in enumerate(steps))
    return TEMPLATE.format(problem=problem, tagged_response=tagged)


def parse_index(text: str, n_steps: int) -> int | None:
    """The last boxed integer of a reply when it is -1 or a paragraph index, else None."""
    found = BOXED.findall(text or "")
    if not found:
        return None
    k = int(found[-1])
    return k if -1 <= k < n_steps else None


def index_scores(indices: Sequence[int], n_steps: int) -> list[float]:
    """P(step correct) from sampled earliest-error indices: the share whose error lies after the step."""
    return [sum(1 for k in indices if k == -1 or k > i) / len(indices) for i in range(n_steps)]


class CriticJob(ClaudeJob):
    """One ProcessBench critic request per (problem, steps, sample)."""

    prompt_version = PROMPT_VERSION
    unit = "solution"
    prompt_cache = False  # the published prompt has no shared prefix to cache

    def __init__(self, model: str, *, max_tokens: int = 4096, **kw: Any):
        super().__init__(model, **kw)
        self.max_tokens = max_tokens

    def key(self, item: tuple) -> str:
        problem, steps, sample = item
        return hashlib.sha256(json.dumps([self.model, PROMPT_VERSION, problem, list(steps), sample], ensure_ascii=False).encode()).hexdigest()

    def messages(self, item: tuple) -> list[dict]:
        return [{"role": "user", "content": critic_prompt(item[0], item[1])}]

    def params(self, messages: list[dict]) -> dict:
        return {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}

    def parse(self, text: str, item: tuple) -> int | None:
        return parse_index(text, len(item[1]))

    def reask(self, item: tuple, messages: list[dict], text: str) -> list[dict]:
        n = len(item[1])
        return messages + [{"role": "assistant", "content": text or "(empty)"},
                           {"role": "user", "content": f"Give only the index of the paragraph with the earliest error (0 to {n - 1}), "
                                                       "or -1 if every paragraph is correct, in \\boxed{}."}]

    def estimate_one(self, item: tuple) -> tuple[int, int]:
        return len(critic_prompt(item[0], item[1])) // CHARS_PER_TOKEN, OUT_PER_PARAGRAPH * len(item[1]) + OUT_PER_REPLY


class ClaudeCritic:
    """Claude as a PRM (see the module docstring): `score_batch`, `score_candidates`, `score_steps`."""

    paid = True  # callers score everything they need in one call first: one estimate, one confirmation

    def __init__(self, model: str, *, samples: int = 1, max_tokens: int = 4096, cache_path: str | Path | None = None,
                 yes: bool = False, confirm: Callable[[dict], bool] | None = None, **job: Any):
        from prm.models.prm import PRMSpec

        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.model, self.samples = model, samples
        self._ask = confirm or (lambda est: confirm_spend(est, yes, f"critic ({model})"))
        self._confirmed = False
        self.job = CriticJob(model, max_tokens=max_tokens, cache_path=cache_path, confirm=self._confirm_once, **job)
        self.spec = PRMSpec(label_scheme="binary", separator="", backbone=PREFIX + model, kind="api", prm_kind="critic",
                            extra={"samples": samples, "prompt": PROMPT_VERSION})
        self.shares_prefix = False

    def _confirm_once(self, est: dict) -> bool:
        """Paid work is confirmed once per critic: later calls (search scores as it goes) go on,
        within the job's budget."""
        if not self._confirmed:
            self._confirmed = bool(self._ask(est))
        return self._confirmed

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 16) -> list[list[float]]:
        """P(step correct) for every step of every (problem, steps) item; [] for a solution whose
        replies gave no valid index. ``batch_size`` is unused (requests run concurrently)."""
        jobs = [(p, tuple(st), j) for p, st in items for j in range(self.samples)]
        got = self.job.run(jobs, desc="critic") if jobs else []
        out = []
        for i, (_, steps) in enumerate(items):
            indices = [k for k in got[i * self.samples : (i + 1) * self.samples] if k is not None]
            out.append(index_scores(indices, len(steps)) if indices and steps else [])
        unscored = sum(1 for o, (_, steps) in zip(out, items) if steps and not o)
        if unscored:
            log.warning("critic %s: %d of %d solutions got no valid \\boxed{index} (-1 to the last paragraph) even after a re-ask; "
                        "they have no score and count as wrong predictions", self.model, unscored, len(items))
        return out

    def score_candidates(self, problem: str, candidates: Sequence[Sequence[str]], batch_size: int = 16) -> list[list[float]]:
        return self.score_batch([(problem, c) for c in candidates], batch_size)

    def score_steps(self, problem: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]

    def encode(self, *a: Any, **kw: Any) -> None:
        raise TypeError("an LLM critic has no token layout: it scores through the API (score_batch)")

    def save(self, path: str | Path) -> None:
        raise TypeError(f"an LLM critic has no weights to save; load it again as '{PREFIX}{self.model}'")

    def api_usage(self) -> dict:
        return self.job.usage.as_dict(self.model)


def load_critic(name: str, **options: Any) -> ClaudeCritic:
    """The critic named ``claude:<model id>``; ``options`` are `ClaudeCritic` settings."""
    from prm.label.claude import load_dotenv_key
    from prm.models.kinds import PRMLoadError

    model = name[len(PREFIX):].strip()
    if not model:
        raise PRMLoadError(f"'{name}': give a Claude model id after '{PREFIX}', e.g. {PREFIX}claude-sonnet-4-6")
    if not (options.get("api_key") or load_dotenv_key()):
        raise PRMLoadError(f"'{name}' is an LLM critic: it needs ANTHROPIC_API_KEY (environment or .env)")
    return ClaudeCritic(model, **options)
