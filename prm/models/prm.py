"""A process reward model: any Hugging Face backbone with a token-classification head that scores
each step at its score position (see `prm.models.encoding`).

Label schemes and heads:

- ``binary``: 2 classes; P(correct) = softmax(logits)[1].
- ``ternary``: 3 classes (negative, neutral, positive); P(correct) = softmax(logits)[2].
- ``soft``: 2 classes trained with soft cross-entropy against (1 - p, p); P(correct) as binary.
  Soft targets stay floats end to end.

A saved PRM is a standard model directory (safetensors, loadable by
``AutoModelForTokenClassification`` without ``trust_remote_code``, or a PEFT adapter directory)
plus ``prm_config.json`` recording separator, label scheme, backbone kind and truncation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from prm.models.backbones import resolve
from prm.models.encoding import IGNORE, StepEncoding, encode_steps, prompt_ids

log = logging.getLogger(__name__)

PRM_CONFIG = "prm_config.json"
NUM_LABELS = {"binary": 2, "soft": 2, "ternary": 3}
POSITIVE_CLASS = {"binary": 1, "soft": 1, "ternary": 2}
SPECIAL_SEPARATORS = ("ки", "<extra_0>")
HEAD_NAMES = ("score", "classifier")  # the token-classification head: decoders, BERT-style encoders


def set_attention(model: Any, impl: str) -> str | None:
    """Switch the attention kernel of ``model`` (a PEFT wrapper too) to ``impl`` ("eager", "sdpa",
    ...) where transformers allows it; returns the kernel it had."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    old = getattr(base.config, "_attn_implementation", None)
    if old != impl and hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(impl)
    return old


@dataclass
class PRMSpec:
    """What a saved PRM needs besides its weights (stored as ``prm_config.json``)."""

    label_scheme: str = "binary"
    separator: str = "\n"
    backbone: str = ""  # what it was built from (hub id, path, or embedded name)
    kind: str = "encoder"  # "encoder" or "causal"
    max_length: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    adapter: bool = False  # saved as a PEFT adapter on ``backbone``
    extra: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        Path(path, PRM_CONFIG).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PRMSpec:
        f = Path(path, PRM_CONFIG)
        if not f.is_file():
            raise FileNotFoundError(f"{path} is not a PRM directory: no {PRM_CONFIG}")
        return cls(**json.loads(f.read_text()))


def is_causal(config: Any) -> bool:
    return not getattr(config, "is_encoder_decoder", False) and getattr(config, "model_type", "") not in (
        "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "modernbert", "mpnet",
    )


def step_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_scheme: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean loss over labeled score positions.

    logits: (batch, seq, classes); labels: (batch, seq) floats, IGNORE where unlabeled;
    weights: optional (batch,) per-example or (batch, seq) per-step weights.
    Hard schemes use cross-entropy on class ids; ``soft`` uses soft cross-entropy on (1 - p, p).
    """
    mask = labels != IGNORE  # (batch, seq)
    if not mask.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits[mask].float(), dim=-1)  # (n, classes)
    target = labels[mask]
    if label_scheme == "soft":
        loss = -(target * logp[:, 1] + (1.0 - target) * logp[:, 0])
    else:
        loss = F.nll_loss(logp, target.long(), reduction="none")
    if weights is not None:
        w = weights if weights.dim() == 2 else weights[:, None].expand_as(labels)
        w = w[mask].to(loss.dtype)
        return (loss * w).sum() / mask.sum()
    return loss.mean()


def load_backbone(
    name_or_path: str,
    label_scheme: str = "binary",
    separator: str = "\n",
    *,
    torch_dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    use_pretrained: bool = True,
) -> tuple[Any, Any]:
    """A token-classification model and its tokenizer, ready for step scoring.

    Adds the separator as a special token (resizing embeddings) when it is a step tag such as
    ``ки``; gives decoder tokenizers a pad token (their eos) when they lack one. ``load_in_4bit``
    loads the backbone's linear layers as 4-bit NF4 (`four_bit_kwargs`), for QLoRA with `apply_lora`.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    if label_scheme not in NUM_LABELS:
        raise ValueError(f"unknown label scheme '{label_scheme}' for a PRM; known: {', '.join(NUM_LABELS)}")
    path = resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    # ignore_mismatched_sizes: a checkpoint with another head size (e.g. a binary PRM as the start
    # of a ternary one) keeps its backbone and gets a fresh head.
    kw: dict[str, Any] = {"num_labels": NUM_LABELS[label_scheme], "trust_remote_code": trust_remote_code, "ignore_mismatched_sizes": True}
    if torch_dtype is not None:
        kw["dtype"] = torch_dtype
    if load_in_4bit:
        if not use_pretrained:
            raise ValueError("load_in_4bit quantizes pretrained weights; it cannot be combined with use_pretrained=False")
        kw.update(four_bit_kwargs(torch_dtype))
    if use_pretrained:
        model = AutoModelForTokenClassification.from_pretrained(path, **kw)
        if load_in_4bit:
            _own_cpu_tensors(model)
    else:
        config = AutoConfig.from_pretrained(path, num_labels=kw["num_labels"], trust_remote_code=trust_remote_code)
        model = AutoModelForTokenClassification.from_config(config, trust_remote_code=trust_remote_code)
    prepare_tokenizer(tok, model, separator)
    return model, tok


def four_bit_kwargs(compute_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """``from_pretrained`` arguments for QLoRA's 4-bit base weights: NF4 with double quantization
    (bitsandbytes; 0.50 runs it on a CPU too). The token-classification head is new and trained in
    full, so it stays out of quantization. Matmuls run in ``compute_dtype``: by default bf16 on a GPU
    that has it, else fp32."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError("4-bit loading needs bitsandbytes: pip install bitsandbytes==0.50.2 (in the 'gpu' extra; runs on a CPU too)")
    from transformers import BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(HEAD_NAMES))
    # A quantized model cannot be moved after loading: place it now, one whole copy per process
    # (under `accelerate launch` each process has its own GPU, LOCAL_RANK).
    device = int(os.environ.get("LOCAL_RANK", 0)) if cuda else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}


def _own_cpu_tensors(model: Any) -> None:
    """Copy the CPU tensors a 4-bit load kept in full precision (embeddings, norms) out of the
    memory-mapped checkpoint. They are views of the file, which quantizing read in full, so while
    they live the whole file stays mapped and resident (SmolLM2: ~300 MB more RSS than the model)."""
    for module in model.modules():
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if t.device.type == "cpu" and type(t).__name__ != "Params4bit":
                t.data = t.data.clone()


def is_quantized(model: Any) -> bool:
    """Whether ``model`` (or the base of a PEFT wrapper) holds 4- or 8-bit bitsandbytes weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def prepare_tokenizer(tok: Any, model: Any, separator: str) -> None:
    """Pad token for decoders; step-tag separators as special tokens (embeddings resized)."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    if separator in SPECIAL_SEPARATORS and separator not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [separator]})
        model.resize_token_embeddings(len(tok))


class PRM:
    """A model, its tokenizer and its `PRMSpec`; scores steps in one forward pass per solution."""

    def __init__(self, model: Any, tokenizer: Any, spec: PRMSpec):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec

    @classmethod
    def from_backbone(cls, name_or_path: str, spec: PRMSpec | None = None, **kw: Any) -> PRM:
        spec = spec or PRMSpec()
        model, tok = load_backbone(name_or_path, spec.label_scheme, spec.separator, **kw)
        spec.backbone = spec.backbone or name_or_path
        if kw.get("load_in_4bit"):
            spec.extra["load_in_4bit"] = True  # `load` rebuilds the same 4-bit base under a saved adapter
        spec.kind = "causal" if is_causal(model.config) else "encoder"
        return cls(model, tok, spec)

    @classmethod
    def load(cls, path: str | Path, *, torch_dtype: torch.dtype | None = None, trust_remote_code: bool = False,
             load_in_4bit: bool | None = None) -> PRM:
        """Load a PRM saved by `save` (full model or PEFT adapter). ``load_in_4bit``: None loads an
        adapter's base as it was trained (4-bit after QLoRA), True/False forces 4-bit/full weights."""
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        spec = PRMSpec.load(path)
        tok = AutoTokenizer.from_pretrained(path)
        four_bit = bool(spec.extra.get("load_in_4bit", False)) if load_in_4bit is None else load_in_4bit
        if spec.adapter:
            from peft import PeftModel

            base, _ = load_backbone(spec.backbone, spec.label_scheme, spec.separator, torch_dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                    load_in_4bit=four_bit)
            if len(tok) != base.get_input_embeddings().weight.shape[0]:
                base.resize_token_embeddings(len(tok))
            model = PeftModel.from_pretrained(base, path)
        else:
            kw = {"dtype": torch_dtype} if torch_dtype is not None else {}
            if load_in_4bit:
                kw.update(four_bit_kwargs(torch_dtype))
            model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)
            if load_in_4bit:
                _own_cpu_tensors(model)
        if spec.adapter and not four_bit:
            spec.extra.pop("load_in_4bit", None)  # what this object holds now
        model.eval()
        return cls(model, tok, spec)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.spec.adapter = hasattr(self.model, "peft_config")
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.spec.save(path)

    @property
    def positive_class(self) -> int:
        return POSITIVE_CLASS[self.spec.label_scheme]

    def encode(self, prompt: str, steps: Sequence[str], labels: Sequence[float | None] | None = None, **kw: Any) -> StepEncoding | None:
        """The training/inference tokenization with this PRM's separator and truncation."""
        s = self.spec
        opts = dict(separator=s.separator, max_length=s.max_length, max_prompt_length=s.max_prompt_length, max_completion_length=s.max_completion_length)
        opts.update(kw)
        return encode_steps(self.tokenizer, prompt, steps, labels, **opts)

    @torch.no_grad()
    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 16) -> list[list[float]]:
        """P(step correct) for every step of every (problem, steps) item; one forward pass per
        solution, batched. Steps removed by truncation get no score (shorter list)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        encs = [self.encode(p, st) for p, st in items]
        out: list[list[float]] = [[] for _ in items]
        order = sorted((i for i, e in enumerate(encs) if e is not None), key=lambda i: len(encs[i].input_ids))
        pad = self.tokenizer.pad_token_id or 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(encs[i].input_ids) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):  # right padding: positions stay as encoded
                n = len(encs[i].input_ids)
                ids[r, :n] = torch.tensor(encs[i].input_ids)
                att[r, :n] = 1
            logits = self.model(input_ids=ids.to(device), attention_mask=att.to(device)).logits  # (batch, seq, classes)
            probs = logits.float().softmax(-1)[..., self.positive_class].cpu()
            for r, i in enumerate(idx):
                out[i] = probs[r, encs[i].score_positions].tolist()
        return out

    @torch.no_grad()
    def score_candidates(self, problem: str, candidates: Sequence[Sequence[str]], batch_size: int = 16) -> list[list[float]]:
        """P(step correct) for each step of N candidate solutions of ONE problem (best-of-N).

        For a causal backbone the problem's tokens are run once and their key/value cache is
        shared by all candidates (a causal model's states for the prefix do not depend on what
        follows), so only the candidates' own tokens are computed: the same scores as
        `score_batch`, for a fraction of the work when the problem is long. Encoders (where every
        token sees the whole solution) fall back to `score_batch`."""
        if self.spec.kind != "causal" or not candidates:
            return self.score_batch([(problem, c) for c in candidates], batch_size)
        from transformers import DynamicCache

        self.model.eval()
        device = next(self.model.parameters()).device
        s = self.spec
        prefix = prompt_ids(self.tokenizer, problem, separator=s.separator, max_length=s.max_length, max_prompt_length=s.max_prompt_length)
        P = len(prefix)
        encs = [self.encode(problem, c) for c in candidates]
        out: list[list[float]] = [[] for _ in candidates]
        pad = self.tokenizer.pad_token_id or 0
        # the prefix once: (1, P) -> a cache of P positions in every layer
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True)
        order = sorted((i for i, e in enumerate(encs) if e is not None), key=lambda i: len(encs[i].input_ids))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for i in idx:
                if encs[i].input_ids[:P] != prefix:  # cannot happen with the one encoding; guards refactors
                    raise AssertionError("a candidate does not start with the problem's tokens")
            width = max(len(encs[i].input_ids) for i in idx) - P
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), P + width), dtype=torch.long)
            att[:, :P] = 1
            for r, i in enumerate(idx):  # right padding after each candidate's own tokens
                n = len(encs[i].input_ids) - P
                ids[r, :n] = torch.tensor(encs[i].input_ids[P:])
                att[r, : P + n] = 1
            c = _copy_cache(cache, len(idx))
            pos = torch.arange(P, P + width).expand(len(idx), -1)
            logits = self.model(input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device),
                                past_key_values=c, use_cache=True).logits  # (batch, width, classes)
            probs = logits.float().softmax(-1)[..., self.positive_class].cpu()
            for r, i in enumerate(idx):
                out[i] = probs[r, [p - P for p in encs[i].score_positions]].tolist()
        return out

    def score_steps(self, problem: str, steps: Sequence[str]) -> list[float]:
        """P(step correct) for each step of one solution."""
        return self.score_batch([(problem, steps)])[0]


def _copy_cache(cache: Any, n: int) -> Any:
    """A cache holding ``n`` copies of a batch-1 cache (the original stays as it is for the next batch)."""
    import copy

    c = copy.deepcopy(cache)
    c.batch_repeat_interleave(n)
    return c


def _head_name(model: Any) -> str:
    """Name of the token-classification head (``score`` for decoders, ``classifier`` for BERT)."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise ValueError(f"cannot find the classification head of {type(model).__name__}")


def apply_lora(prm: PRM, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: str | list[str] = "all-linear") -> PRM:
    """Wrap the model with LoRA adapters (peft). ``all-linear`` means every linear layer of the
    backbone; the classification head is not adapted but trained in full and saved with the adapter.
    On a 4-bit backbone (``load_in_4bit``) this is QLoRA."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if is_quantized(prm.model):
        # QLoRA: freeze the quantized base and keep its remaining weights (norms, embeddings) in
        # fp32. Gradient checkpointing stays the training arguments' choice.
        prepare_model_for_kbit_training(prm.model, use_gradient_checkpointing=False)
    head = _head_name(prm.model)
    if target_modules == "all-linear":
        target_modules = sorted({n.rsplit(".", 1)[-1] for n, m in prm.model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith(head)})
    elif isinstance(target_modules, str):
        target_modules = [m.strip() for m in target_modules.split(",") if m.strip()]
    cfg = LoraConfig(task_type=TaskType.TOKEN_CLS, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, modules_to_save=[head])
    prm.model = get_peft_model(prm.model, cfg)
    prm.spec.adapter = True
    return prm
