"""Verifiers grade every step of a solution (+1 / -1 as booleans) and its final answer.

Registered by name in `VERIFIERS`: ``rules`` (offline exact arithmetic), ``claude`` (one request
per solution, cached, retried, optionally through the Message Batches API) and ``mc``
(Math-Shepherd Monte-Carlo rollouts from each step prefix with a generator).
"""

from __future__ import annotations

from prm.label.verify.claude import ClaudeVerifier
from prm.label.verify.mc import MCVerifier
from prm.label.verify.rules import Grade, RulesVerifier, check_step
from prm.registry import Registry

VERIFIERS: Registry[type] = Registry("verifier")
VERIFIERS.register("rules")(RulesVerifier)
VERIFIERS.register("claude")(ClaudeVerifier)
VERIFIERS.register("mc")(MCVerifier)

__all__ = ["VERIFIERS", "ClaudeVerifier", "Grade", "MCVerifier", "RulesVerifier", "check_step"]
