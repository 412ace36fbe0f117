"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

One contract (`Verifier`: ``grade_many`` / ``grade`` / ``api_usage``) and one factory,
`make_verifier(name, options)`, over the registry `VERIFIERS`: ``rules`` (offline exact arithmetic),
``reference`` (offline: the reference solution's chain of quantities), ``claude`` (one request per
solution, cached, retried, optionally through the Message Batches API), ``mc`` (Monte-Carlo rollouts
from step prefixes with a generator: every prefix, Math-Shepherd, or OmegaPRM's binary search for
the first error) and ``consensus`` (two or more of these, a solution kept only where they agree on
its first error). Every verifier is built from the same `VerifierOptions`; each reads the fields it
needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prm.label.claude import DEFAULT_MODEL, load_dotenv_key
from prm.label.verify.base import Grade, Item, Verifier, VerifierBase
from prm.label.verify.claude import ClaudeVerifier
from prm.label.verify.consensus import ConsensusVerifier, consensus_summary, first_error
from prm.label.verify.mc import Completer, MCVerifier, RolloutCache
from prm.label.verify.reference import ReferenceVerifier
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
    mc_search: str = "linear"  # mc: linear (every prefix) or binary (OmegaPRM's search for the first error)
    rollout_cache: RolloutCache | None = None  # mc: shared rollouts (default: one per verifier, on disk at rollout_cache_path if set)
    rollout_cache_path: str | Path | None = None  # mc: JSONL of sampled rollouts (a rerun samples nothing twice)
    consensus: Sequence[str] = ("mc", "rules")  # consensus: the labelers that must agree on the first error
    references: Mapping[str, str | Sequence[str]] | None = None  # reference: problem text -> reference solution (steps or text)


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
    cache = o.rollout_cache
    if cache is None:  # the generator behind the completer names its sampling settings and counts tokens, when it can
        gen = getattr(o.completer, "__self__", None)
        cache = RolloutCache(o.rollout_cache_path, gen.settings() if hasattr(gen, "settings") else None, getattr(gen, "count_tokens", None))
    return MCVerifier(o.completer, o.num_completions, o.mc_label, search=o.mc_search, cache=cache)


@VERIFIERS.register("reference")
def _reference(o: VerifierOptions) -> Verifier:
    return ReferenceVerifier(o.references, o.uncheckable)


@VERIFIERS.register("consensus")
def _consensus(o: VerifierOptions) -> Verifier:
    names = [resolve_name(n) for n in o.consensus]
    if "consensus" in names or len(set(names)) != len(names):
        raise ValueError(f"consensus labelers must be distinct and not consensus itself, got {', '.join(o.consensus)}")
    return ConsensusVerifier({n: make_verifier(n, o) for n in names})


def resolve_name(name: str) -> str:
    """``auto`` is claude when an API key is set (environment or .env), else the offline rules."""
    return name if name != "auto" else ("claude" if load_dotenv_key() else "rules")


def make_verifier(name: str, options: VerifierOptions | None = None, **overrides: Any) -> Verifier:
    """The verifier registered as ``name`` (or ``auto``, see `resolve_name`), built from ``options``
    with ``overrides`` (VerifierOptions fields) applied. An unknown name lists the known ones."""
    return VERIFIERS.get(resolve_name(name))(replace(options or VerifierOptions(), **overrides))


__all__ = ["VERIFIERS", "ClaudeVerifier", "ConsensusVerifier", "Grade", "Item", "MCVerifier", "ReferenceVerifier", "RolloutCache",
           "RulesVerifier", "Verifier", "VerifierBase", "VerifierOptions", "check_step", "consensus_summary", "first_error", "make_verifier",
           "resolve_name"]
