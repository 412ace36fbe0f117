"""Solution generators: a local transformers model (Claude and vLLM arrive with the main-job issue)."""

from prm.generate.local import LocalGenerator, load_causal_lm

__all__ = ["LocalGenerator", "load_causal_lm"]
