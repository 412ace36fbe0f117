"""Solution generators: a local transformers model (Method 1, mistake mining, Monte-Carlo
rollouts) and Claude (Method 2)."""

from prm.generate.claude import ClaudeGenerator
from prm.generate.local import LocalGenerator, load_causal_lm

__all__ = ["ClaudeGenerator", "LocalGenerator", "load_causal_lm"]
