"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

Registered by name in `VERIFIERS`: ``rules`` (offline exact arithmetic). Claude and Monte-Carlo
verifiers arrive with the main-job issue.
"""

from __future__ import annotations

from prm.registry import Registry
from prm.verify.rules import Grade, RulesVerifier, check_step

VERIFIERS: Registry[type] = Registry("verifier")
VERIFIERS.register("rules")(RulesVerifier)

__all__ = ["Grade", "RulesVerifier", "VERIFIERS", "check_step"]
