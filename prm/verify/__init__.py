"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

Registered by name in `VERIFIERS`: ``rules`` (offline exact arithmetic) and ``claude`` (one
request per solution, cached, retried). The Monte-Carlo verifier arrives with the main-job issue.
"""

from __future__ import annotations

from prm.registry import Registry
from prm.verify.claude import ClaudeVerifier
from prm.verify.rules import Grade, RulesVerifier, check_step

VERIFIERS: Registry[type] = Registry("verifier")
VERIFIERS.register("rules")(RulesVerifier)
VERIFIERS.register("claude")(ClaudeVerifier)

__all__ = ["ClaudeVerifier", "Grade", "RulesVerifier", "VERIFIERS", "check_step"]
