"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

Registered by name in `VERIFIERS`: ``rules`` (offline exact arithmetic), ``claude`` (one request
per solution, cached, retried, optionally through the Message Batches API) and ``mc``
(Math-Shepherd Monte-Carlo rollouts from each step prefix with a generator).
"""

from __future__ import annotations

from prm.registry import Registry
from prm.verify.claude import ClaudeVerifier
from prm.verify.mc import MCVerifier
from prm.verify.rules import Grade, RulesVerifier, check_step

VERIFIERS: Registry[type] = Registry("verifier")
VERIFIERS.register("rules")(RulesVerifier)
VERIFIERS.register("claude")(ClaudeVerifier)
VERIFIERS.register("mc")(MCVerifier)

__all__ = ["ClaudeVerifier", "Grade", "MCVerifier", "RulesVerifier", "VERIFIERS", "check_step"]
