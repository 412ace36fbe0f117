"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

One contract (`Verifier`: ``grade_many`` / ``grade`` / ``api_usage``) and one factory,
`make_verifier(name, options)`, over the registry `VERIFIERS`: ``rules`` (offline exact arithmetic),
``claude`` (one request per solution, cached, retried, optionally through the Message Batches API)
and ``mc`` (Math-Shepherd Monte-Carlo rollouts from each step prefix with a generator). Every
verifier is built from the same `VerifierOptions`; each reads the fields it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prm.label.claude import DEFAULT_MODEL, load_dotenv_key
from prm.label.verify.base import Grade, Item, Verifier, VerifierBase
from prm.label.verify.claude import ClaudeVerifier
from prm.label.verify.mc import Completer, MCVerifier
from prm.label.verify.rules import RulesVerifier, check_step
from prm.registry import Registry


@dataclass
class VerifierOptions:
    """Settings of every verifier; each verifier reads its own fields and ignores the others."""

    uncheckable: str = "correct"  # rules: verdict of a step with no checkable computation (correct, previous, unlabeled)
    model: str = DEFAULT_MODEL  # claude: model id
    cache_path: str | Path | None = None  # claude: on-disk answer cache (a rerun never pays twice)
    max_tokens: int = 2048  # claude: output tokens per grading reply
    job: dict[str, Any] = field(default_factory=dict)  # claude: `prm.label.claude.ClaudeJob` settings (max_concurrency, max_cost_usd, batch, confirm, ...)
    completer: Completer | None = None  # mc: (problems, prefixes, n) -> n continuations each, e.g. a generator's ``complete``
    num_completions: int = 4  # mc: continuations per step prefix
    mc_label: str = "hard"  # mc: a step is correct if any (hard) or at least half (soft) of its continuations reach the answer


VERIFIERS: Registry[Callable[[VerifierOptions], Verifier]] = Registry("verifier")


@VERIFIERS.register("rules")
def _rules(o: VerifierOptions) -> Verifier:
    return RulesVerifier(o.uncheckable)


@VERIFIERS.register("claude")
def _claude(o: VerifierOptions) -> Verifier:
    return ClaudeVerifier(o.model, max_tokens=o.max_tokens, cache_path=o.cache_path, **o.job)


@VERIFIERS.register("mc")
def _mc(o: VerifierOptions) -> Verifier:
    if o.completer is None:
        raise ValueError("the mc verifier needs a completer (a generator's complete method) in VerifierOptions.completer")
    return MCVerifier(o.completer, o.num_completions, o.mc_label)


def resolve_name(name: str) -> str:
    """``auto`` is claude when an API key is set (environment or .env), else the offline rules."""
    return name if name != "auto" else ("claude" if load_dotenv_key() else "rules")


def make_verifier(name: str, options: VerifierOptions | None = None, **overrides: Any) -> Verifier:
    """The verifier registered as ``name`` (or ``auto``, see `resolve_name`), built from ``options``
    with ``overrides`` (VerifierOptions fields) applied. An unknown name lists the known ones."""
    return VERIFIERS.get(resolve_name(name))(replace(options or VerifierOptions(), **overrides))


__all__ = ["VERIFIERS", "ClaudeVerifier", "Grade", "Item", "MCVerifier", "RulesVerifier", "Verifier", "VerifierBase",
           "VerifierOptions", "check_step", "make_verifier", "resolve_name"]
