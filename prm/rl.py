"""Process rewards for RL: a PRM as the reward function of TRL's ``GRPOTrainer``.

TRL (1.16) calls every reward function as ``f(prompts=..., completions=..., completion_ids=...,
**columns)`` and wants one float (or None) per completion back. ``columns`` are the dataset's other
columns (e.g. ``answer``), one value per completion, plus ``trainer_state``, ``log_extra`` and
``log_metric``. Prompts and completions come in two shapes:

- standard: ``prompts[i]`` and ``completions[i]`` are strings;
- conversational: ``prompts[i]`` is a list of ``{"role", "content"}`` messages (the problem is the
  last user message) and ``completions[i]`` is ``[{"role": "assistant", "content": ...}]``.

`PRMReward` reads the problem from a ``problem`` column when the dataset has one (`grpo_prompts`
writes it), else from the prompt; it splits each completion into steps the PRM's way (`prm.steps.split_steps`), scores all
completions of the batch with one `PRM.score_batch` call (the one scoring path) and aggregates the
step scores (min, prod, last, ... from `prm.eval.aggregate.AGGREGATORS`). `AnswerReward` is the
answer-correctness reward (1.0 when the completion's final answer equals the dataset's gold answer
under `prm.answers.answers_equal`, else 0.0); give both to the trainer with ``reward_weights`` to mix
them (TRL sums the weighted rewards).

Per-step shaping: GRPOTrainer computes one group-normalized advantage per completion from one scalar
reward; it has no input for step- or token-level rewards (nor has RLOO in TRL 1.16), so the PRM's
step scores are aggregated for it. `PRMReward.step_scores` returns the per-step scores for trainers
that take dense rewards, and the scoring server (`prm.serve`) returns them with every aggregate.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from prm.answers import is_correct
from prm.eval.aggregate import AGGREGATORS, aggregate
from prm.steps import SPLIT_MODES, split_steps

log = logging.getLogger(__name__)


def _content(message: Any) -> str:
    """Text of one chat message; content may be a string or a list of ``{"type": "text", "text"}`` parts."""
    c = message.get("content", "") if isinstance(message, dict) else message
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in c)
    return "" if c is None else str(c)


# The last user turn of a prompt already rendered with a chat template (OpenRLHF sends those):
# ChatML (Qwen, SmolLM), Llama 3, Mistral/Llama 2.
_CHAT_USER_TURN = (
    re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
    re.compile(r"\[INST\](.*?)\[/INST\]", re.S),
)


def problem_from_chat(text: str) -> str:
    """The last user turn of a chat-template-rendered prompt; plain text comes back unchanged."""
    for pattern in _CHAT_USER_TURN:
        turns = pattern.findall(text)
        if turns:
            return turns[-1].strip()
    return text


def problem_text(prompt: str | Sequence[dict]) -> str:
    """The problem a PRM sees: the last user message of a conversation, or the prompt string (its
    last user turn when it was rendered with a chat template)."""
    if isinstance(prompt, str):
        return problem_from_chat(prompt)
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("a conversational prompt needs at least one user message (the problem)")
    return _content(users[-1])


def completion_text(completion: str | Sequence[dict]) -> str:
    """The solution text of a completion: the string, or its assistant messages joined."""
    if isinstance(completion, str):
        return completion
    return "\n".join(_content(m) for m in completion if not isinstance(m, dict) or m.get("role", "assistant") == "assistant")


class PRMReward:
    """A PRM as a TRL reward function: ``reward(prompts, completions, **kwargs) -> list[float]``.

    Args:
        prm: any object with the PRM interface (``score_batch(items, batch_size)``).
        aggregator: how step scores become one reward (``prm.eval.aggregate.AGGREGATORS``: min, prod, last, ...).
        split_mode: how completions are split into steps (`prm.steps.split_steps`); pick the split
            of the PRM's training data (``lines`` for one step per line, ``tag`` for ``ки``/``<extra_0>``).
        batch_size: solutions per PRM forward pass.
        empty_reward: reward of a completion with no step at all (or none left after truncation).
        max_steps: score at most this many leading steps of a completion (None: all).
    """

    def __init__(self, prm: Any, aggregator: str = "min", split_mode: str = "auto", batch_size: int = 16,
                 empty_reward: float = 0.0, max_steps: int | None = None, name: str | None = None):
        AGGREGATORS.get(aggregator)  # an unknown name fails here, listing the known ones
        if split_mode not in SPLIT_MODES:
            raise ValueError(f"unknown split mode '{split_mode}'; known: {', '.join(SPLIT_MODES)}")
        self.prm, self.aggregator, self.split_mode = prm, aggregator, split_mode
        self.batch_size, self.empty_reward, self.max_steps = batch_size, float(empty_reward), max_steps
        # TRL names a reward function by its __name__ in the logs: rewards/<name>/mean
        self.__name__ = name or f"prm_{aggregator}"

    def split(self, completion: str | Sequence[dict]) -> list[str]:
        steps = split_steps(completion_text(completion), self.split_mode)
        return steps[: self.max_steps] if self.max_steps else steps

    def step_scores(self, prompts: Sequence[Any], completions: Sequence[Any], problems: Sequence[str] | None = None) -> list[list[float]]:
        """P(step correct) for every step of every completion, in one batched PRM call. The PRM reads
        ``problems[i]`` when given (a dataset column ``problem``), else the problem in ``prompts[i]``.
        A completion with no steps gets []; steps cut by the PRM's truncation get no score (shorter list)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        probs = list(problems) if problems is not None else [problem_text(p) for p in prompts]
        items = [(q, self.split(c)) for q, c in zip(probs, completions)]
        keep = [i for i, (_, steps) in enumerate(items) if steps]
        scored = self.prm.score_batch([items[i] for i in keep], batch_size=self.batch_size) if keep else []
        out: list[list[float]] = [[] for _ in items]
        for i, s in zip(keep, scored):
            out[i] = [float(x) for x in s]
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        scores = self.step_scores(prompts, completions, kwargs.get("problem"))
        rewards = [aggregate(s, self.aggregator) if s else self.empty_reward for s in scores]
        _log(kwargs, self.__name__, scores, rewards)
        return rewards


class AnswerReward:
    """Answer correctness from a dataset column: 1.0 when the completion's final answer
    (`prm.answers.extract_answer`) equals the gold one (`answers_equal`, math-verify), else 0.0
    (a completion that states no answer, or a row without a gold answer, gets 0.0)."""

    def __init__(self, column: str = "answer", name: str = "answer"):
        self.column = column
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if self.column not in kwargs:
            known = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids"))
            raise KeyError(f"the answer reward reads the dataset column '{self.column}', which this dataset lacks; columns: {known}")
        gold = kwargs[self.column]
        return [1.0 if g is not None and is_correct(completion_text(c), str(g)) else 0.0 for c, g in zip(completions, gold)]


def mixed_reward(prm_score: float, correct: bool | None, prm_weight: float = 1.0, answer_weight: float = 0.0) -> float:
    """``prm_weight * prm_score + answer_weight * [answer correct]``: TRL's weighted sum of the two
    reward functions, for callers that mix them themselves (the scoring server)."""
    return prm_weight * prm_score + answer_weight * (1.0 if correct else 0.0)


def _log(kwargs: dict, name: str, scores: list[list[float]], rewards: list[float]) -> None:
    """Per-step scores into TRL's completions table and a few batch statistics into its metrics."""
    log_extra: Callable | None = kwargs.get("log_extra")
    log_metric: Callable | None = kwargs.get("log_metric")
    if log_extra is not None:
        log_extra(f"{name}_steps", [" ".join(f"{x:.3f}" for x in s) for s in scores])
    if log_metric is not None and scores:
        log_metric(f"{name}/steps_per_completion", statistics.fmean(len(s) for s in scores))
        log_metric(f"{name}/no_step_frac", sum(not s for s in scores) / len(scores))
        flat = [x for s in scores for x in s]
        if flat:
            log_metric(f"{name}/step_score_mean", statistics.fmean(flat))
    log.debug("%s: %d completions, mean reward %.3f", name, len(rewards), statistics.fmean(rewards) if rewards else float("nan"))


def reward_functions(prm: Any, aggregator: str = "min", split_mode: str = "auto", batch_size: int = 16, empty_reward: float = 0.0,
                     prm_weight: float = 1.0, answer_weight: float = 0.0, answer_column: str = "answer") -> tuple[list, list[float]]:
    """The reward functions and weights to hand to GRPOTrainer (``reward_funcs``, ``args.reward_weights``):
    the PRM reward, plus the answer reward when ``answer_weight`` is not 0."""
    funcs: list = [PRMReward(prm, aggregator, split_mode, batch_size, empty_reward)]
    weights = [float(prm_weight)]
    if answer_weight:
        funcs.append(AnswerReward(answer_column))
        weights.append(float(answer_weight))
    return funcs, weights


def grpo_prompts(records: Sequence[dict], tokenizer: Any, answer_column: str = "answer") -> list[dict]:
    """GRPO rows from problem records (``prompt``, ``answer``): conversational prompts (the local
    generator's system prompt and worked example, then the problem) when the policy's tokenizer has a
    chat template, else the generator's plain-text prompt; the bare problem in ``problem`` (what the
    PRM reads) and the gold answer in ``answer_column``."""
    from prm.label.generate.local import EXAMPLES, SYSTEM_PROMPT, chat_prompt

    rows = []
    for r in records:
        if getattr(tokenizer, "chat_template", None):
            msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
            for q, a in EXAMPLES:
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            prompt: Any = msgs + [{"role": "user", "content": r["prompt"]}]
        else:
            prompt = chat_prompt(tokenizer, r["prompt"])
        rows.append({"prompt": prompt, "problem": r["prompt"], answer_column: r.get("answer")})
    return rows
