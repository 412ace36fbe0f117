"""Solution generators: a local model (Method 1, mistake mining, Monte-Carlo rollouts) through
transformers or, on a GPU with vLLM installed, vLLM; and Claude (Method 2)."""

from prm.label.generate.claude import ClaudeGenerator
from prm.label.generate.local import LocalGenerator, load_causal_lm
from prm.label.generate.vllm import VLLMGenerator, make_generator

__all__ = ["ClaudeGenerator", "LocalGenerator", "VLLMGenerator", "load_causal_lm", "make_generator"]
