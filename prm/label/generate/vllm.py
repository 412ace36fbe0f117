"""vLLM generation on a GPU: the same interface as `LocalGenerator` (``generate``, ``complete``),
much faster for Method 1 rollouts and Monte-Carlo completions at scale.

Used when vLLM is installed and a GPU is present (`make_generator`), else the transformers
generator. A PEFT/LoRA adapter directory loads its base model with the adapter as a LoRA request.
vLLM is not a project requirement (it needs CUDA): ``pip install vllm`` on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm.label.generate.local import (
    EXAMPLES,
    SYSTEM_PROMPT,
    LocalGenerator,
    chat_prompt,
)
from prm.label.progress import progress
from prm.models.backbones import resolve

log = logging.getLogger(__name__)


def vllm_usable() -> bool:
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMGenerator:
    """Sample solutions (or continuations of partial solutions) with vLLM."""

    def __init__(self, model: str = "smollm2", *, max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95,
                 seed: int = 0, system_prompt: str = SYSTEM_PROMPT, examples: Sequence[tuple[str, str]] = EXAMPLES, **_: Any):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        path, self.lora = Path(model), None
        base, lora_kw = model, {}
        if (path / "adapter_config.json").is_file():
            conf = json.loads((path / "adapter_config.json").read_text())
            base = conf["base_model_name_or_path"]
            self.lora = LoRARequest("sft_adapter", 1, str(path))
            lora_kw = {"enable_lora": True, "max_lora_rank": max(16, int(conf.get("r", 16)))}
        self.llm = LLM(model=resolve(base), seed=seed, **lora_kw)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_name = model
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.system_prompt, self.examples = system_prompt, list(examples)
        self.chunk = 256  # prompts per vLLM call: large enough to keep the GPU busy, small enough for a moving bar

    def prompt(self, problem: str) -> str:
        return chat_prompt(self.tokenizer, problem, self.system_prompt, self.examples)

    def count_tokens(self, text: str) -> int:
        """Tokens of a generated text (re-tokenized: the cost record of Monte-Carlo rollouts)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def settings(self) -> dict:
        """What decides the sampled texts besides the prompt (the key of cached rollouts)."""
        return {"model": self.model_name, "engine": "vllm", "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed, "system_prompt": self.system_prompt, "examples": self.examples}

    def _sample(self, prompts: list[str], n: int, desc: str, unit: str) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=self.temperature, top_p=self.top_p if self.temperature > 0 else 1.0,
                                max_tokens=self.max_new_tokens, seed=self.seed)
        texts: list[list[str]] = []
        with progress(len(prompts) * n, desc, unit) as bar:  # vLLM schedules each chunk as one big batch
            for b in range(0, len(prompts), self.chunk):
                outs = self.llm.generate(prompts[b : b + self.chunk], params, lora_request=self.lora, use_tqdm=False)
                texts += [[o.text.strip() for o in out.outputs] for out in outs]
                bar.update(len(outs) * n)
        return texts

    def generate(self, problems: Sequence[str], n: int = 1, desc: str = "generating") -> list[list[str]]:
        return self._sample([self.prompt(p) for p in problems], n, desc, "solution")

    def complete(self, problems: Sequence[str], prefixes: Sequence[str], n: int = 1, desc: str = "completing") -> list[list[str]]:
        return self._sample([self.prompt(p) + pre.rstrip() + "\n" for p, pre in zip(problems, prefixes)], n, desc, "continuation")


def make_generator(model: str, use_vllm: str = "auto", **kw: Any) -> LocalGenerator | VLLMGenerator:
    """vLLM when ``use_vllm`` is 'yes', or 'auto' and vLLM + a GPU are there; else transformers."""
    if use_vllm not in ("auto", "yes", "no"):
        raise ValueError(f"use_vllm must be auto, yes or no, not {use_vllm!r}")
    if use_vllm == "yes" or (use_vllm == "auto" and vllm_usable()):
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("--vllm yes: vLLM is not installed (pip install vllm, on a GPU machine)")
        log.info("generating with vLLM")
        return VLLMGenerator(model, **kw)
    return LocalGenerator(model, **kw)
