"""Batched solution sampling with a local transformers model (the "SFT model" of Method 1).

The model is a hub id, a local directory, the embedded ``smollm2``, or a PEFT/LoRA adapter
directory (its base model is loaded and the adapter applied). Prompts use the tokenizer's chat
template when it has one. Sampling is seeded per batch, so a rerun with the same seed, problems and
batch size writes the same solutions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prm.label.progress import progress
from prm.models.backbones import resolve

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "Solve the math problem step by step, one short step per line, and end with 'The answer is: N'."
# One worked example shown before the problem (project-written): small instruction-tuned models
# then write one computation per line and state the answer in a form the checker can read.
EXAMPLES = (
    (
        "Tom has 4 bags with 6 apples each. He eats 5 apples. How many apples are left?",
        "Tom has 4 * 6 = 24 apples.\nAfter eating, 24 - 5 = 19 apples are left.\nThe answer is: 19",
    ),
)


def load_causal_lm(name_or_path: str, *, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                   device: torch.device | str | None = None) -> tuple[Any, Any]:
    """A causal LM and its tokenizer; an adapter directory loads its base model plus the adapter.
    ``device``: where the weights go (None: where they loaded, the CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kw["dtype"] = dtype
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path}/adapter_config.json names no base_model_name_or_path")
        model = AutoModelForCausalLM.from_pretrained(resolve(base), **kw)
        model = PeftModel.from_pretrained(model, str(path))
        tok_src = str(path) if (path / "tokenizer_config.json").is_file() else resolve(base)
    else:
        if not path.exists() and "/" not in name_or_path and name_or_path not in ("smollm2",):
            raise FileNotFoundError(f"--sft_model {name_or_path}: no such directory, and not a hub id (owner/name) or 'smollm2'")
        model = AutoModelForCausalLM.from_pretrained(resolve(name_or_path), **kw)
        tok_src = resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(tok_src, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"  # generation continues from the right end of every row
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device is not None:
        model.to(device)
    model.eval()
    return model, tok


def placement(device: torch.device | str | None, dtype: torch.dtype | None) -> tuple[torch.device | str | None, torch.dtype | None]:
    """Where a generator's weights go and in which dtype. Unset device: the current GPU when there
    is one (sampling there is many times the CPU's rate), else where they load (the CPU). Unset dtype
    on a GPU: bf16; elsewhere the loader's default."""
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if dtype is None and device is not None and torch.device(device).type == "cuda":
        dtype = torch.bfloat16
    return device, dtype


def chat_prompt(tok: Any, problem: str, system_prompt: str = SYSTEM_PROMPT, examples: Sequence[tuple[str, str]] = EXAMPLES) -> str:
    """The generation prompt: the chat template when the tokenizer has one, else plain text."""
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "system", "content": system_prompt}]
        for q, a in examples:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": problem})
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    shots = "".join(f"Problem: {q}\nSolution:\n{a}\n\n" for q, a in examples)
    return f"{system_prompt}\n\n{shots}Problem: {problem}\nSolution:\n"


class LocalGenerator:
    """Sample ``n`` solutions per problem from a local causal LM."""

    def __init__(
        self,
        model: str = "smollm2",
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        batch_size: int = 8,
        seed: int = 0,
        system_prompt: str = SYSTEM_PROMPT,
        examples: Sequence[tuple[str, str]] = EXAMPLES,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        device: torch.device | str | None = None,
    ):
        device, dtype = placement(device, dtype)
        self.model, self.tokenizer = load_causal_lm(model, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.seed, self.system_prompt, self.examples = batch_size, seed, system_prompt, list(examples)

    def prompt(self, problem: str) -> str:
        return chat_prompt(self.tokenizer, problem, self.system_prompt, self.examples)

    def generate(self, problems: Sequence[str], n: int = 1, desc: str = "generating") -> list[list[str]]:
        """``n`` sampled solutions (text) for every problem, in problem order."""
        return self._sample([self.prompt(p) for p in problems], n, desc, "solution")

    def complete(self, problems: Sequence[str], prefixes: Sequence[str], n: int = 1, desc: str = "completing") -> list[list[str]]:
        """``n`` sampled continuations of each partial solution ``prefixes[i]`` of ``problems[i]``
        (the text after the prefix; Math-Shepherd rollouts)."""
        return self._sample([self.prompt(p) + pre.rstrip() + "\n" for p, pre in zip(problems, prefixes)], n, desc, "continuation")

    def count_tokens(self, text: str) -> int:
        """Tokens of a generated text (re-tokenized: the cost record of Monte-Carlo rollouts)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def settings(self) -> dict:
        """What decides the sampled texts besides the prompt (the key of cached rollouts)."""
        return {"model": str(getattr(self.model, "name_or_path", "")), "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "system_prompt": self.system_prompt, "examples": self.examples}

    def _sample(self, texts_in: Sequence[str], n: int, desc: str, unit: str = "solution") -> list[list[str]]:
        prompts = [t for t in texts_in for _ in range(n)]
        texts: list[str] = []
        device = next(self.model.parameters()).device
        with progress(len(prompts), desc, unit) as bar:  # counts generated texts (into the stage's bar inside a stage)
            for b in range(0, len(prompts), self.batch_size):
                texts += self._batch(prompts[b : b + self.batch_size], b, device)
                bar.update(len(prompts[b : b + self.batch_size]))
        return [texts[i * n : (i + 1) * n] for i in range(len(texts_in))]

    @torch.no_grad()
    def _batch(self, prompts: list[str], b: int, device: Any) -> list[str]:
        """Sampled texts for one batch of prompts; ``b`` (its offset) seeds it."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        enc.pop("token_type_ids", None)  # BERT-style tokenizers add it; decoders take no such input
        torch.manual_seed(self.seed + b)  # per batch: reruns reproduce, batches differ
        out = self.model.generate(
            **enc,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.temperature > 0,
            temperature=self.temperature if self.temperature > 0 else None,
            top_p=self.top_p if self.temperature > 0 else None,
            pad_token_id=self.tokenizer.pad_token_id,
        )  # (batch, prompt + new tokens)
        new = out[:, enc["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
