"""A process reward model: one `PRM` interface over every PRM kind (`prm.models.kinds`).

A kind fixes the token layout (``encode``: steps -> tokens + one score position per step), how a
step's score is read (step logits whose positive class is P(correct)), and how its model loads.
``token_cls`` is this project's own head (and TRL's); ``lm_tokens``, ``qwen_prm`` and ``value_head``
load published PRMs (Math-Shepherd, RLHFlow, Qwen2.5-Math-PRM, Skywork-o1-Open-PRM). `load_prm`
is the one loader: it reads ``prm_config.json``, or detects the kind of a hub id or directory.

Label schemes (token_cls heads):

- ``binary``: 2 classes; P(correct) = softmax(logits)[1].
- ``ternary``: 3 classes (negative, neutral, positive); P(correct) = softmax(logits)[2].
- ``soft``: 2 classes trained with soft cross-entropy against (1 - p, p); P(correct) as binary.
  Soft targets stay floats end to end.

A saved PRM is a standard model directory (safetensors, loadable by
``AutoModelForTokenClassification`` without ``trust_remote_code`` for token_cls, or a PEFT adapter
directory) plus ``prm_config.json`` recording kind, layout, separator, label scheme, backbone kind
and truncation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from prm.models.backbones import resolve
from prm.models.encoding import IGNORE, StepEncoding
from prm.models.kinds import KIND_DEFAULTS, KINDS, Kind, PRMLoadError, detect_kind

log = logging.getLogger(__name__)

PRM_CONFIG = "prm_config.json"
NUM_LABELS = {"binary": 2, "soft": 2, "ternary": 3}
POSITIVE_CLASS = {"binary": 1, "soft": 1, "ternary": 2}
SPECIAL_SEPARATORS = ("ки", "<extra_0>")
HEAD_NAMES = ("score", "classifier")  # the token-classification head: decoders, BERT-style encoders
# Shared-prefix scoring runs a run of tokens shared by k solutions once when (k - 1) x its length
# is at least this many tokens (below it, the extra small forward pass costs more than it saves).
SHARED_MIN_SAVED_TOKENS = 32
# On a CPU a forward pass costs what its tokens cost, padding included (compute-bound), so a
# length-sorted batch stops growing where padding would pass this share of its tokens.
CPU_MAX_PADDING = 0.1


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
    separator: str = "\n"  # text after every step (token_cls, value_head) or the step tag (ки, <extra_0>)
    backbone: str = ""  # what it was built from (hub id, path, or embedded name)
    kind: str = "encoder"  # the backbone: "encoder" or "causal"
    max_length: int | None = None
    max_prompt_length: int | None = None
    max_completion_length: int | None = None
    adapter: bool = False  # saved as a PEFT adapter on ``backbone``
    prm_kind: str = "token_cls"  # the PRM family (prm.models.kinds): token_cls, lm_tokens, qwen_prm, value_head
    layout: str = ""  # the kind's layout variant: token_cls "prm_lab" (default) or "trl"; lm_tokens "math_shepherd", "chat" or "openrlhf"; step_cls/step_embeddings "problem+previous+step" or "step"
    good_token: str = "+"  # lm_tokens: the tokens whose logits are compared
    bad_token: str = "-"
    system_prompt: str | None = None  # qwen_prm: the system turn
    extra: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        Path(path, PRM_CONFIG).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PRMSpec:
        f = Path(path, PRM_CONFIG)
        if not f.is_file():
            raise FileNotFoundError(f"{path} is not a PRM directory: no {PRM_CONFIG}")
        data = json.loads(f.read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{f}: unknown field(s) {', '.join(unknown)} (written by a newer PRM lab?)")
        return cls(**data)


def is_causal(config: Any) -> bool:
    return not getattr(config, "is_encoder_decoder", False) and getattr(config, "model_type", "") not in (
        "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "modernbert", "mpnet",
    )


def step_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_scheme: str, weights: torch.Tensor | None = None,
    denominator: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Mean loss over labeled score positions, for every kind (their step logits share one shape).

    logits: (batch, seq, classes); labels: (batch, seq) floats, IGNORE where unlabeled;
    weights: optional (batch,) per-example or (batch, seq) per-step weights; denominator: what the
    weighted sum is divided by (default: the labeled positions; a batch whose rows share labeled
    steps passes the count before sharing).
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
    denom = mask.sum() if denominator is None else denominator
    if weights is not None:
        w = weights if weights.dim() == 2 else weights[:, None].expand_as(labels)
        w = w[mask].to(loss.dtype)
        return (loss * w).sum() / denom
    return loss.sum() / denom


def load_backbone(
    name_or_path: str,
    label_scheme: str = "binary",
    separator: str = "\n",
    *,
    torch_dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    use_pretrained: bool = True,
    spec: PRMSpec | None = None,
) -> tuple[Any, Any]:
    """A model of the spec's kind (token-classification by default) and its tokenizer, ready for
    step scoring.

    Adds the separator as a special token (resizing embeddings) when it is a step tag such as
    ``ки``; gives decoder tokenizers a pad token (their eos) when they lack one. ``load_in_4bit``
    loads the backbone's linear layers as 4-bit NF4 (`four_bit_kwargs`), for QLoRA with `apply_lora`.
    """

    if label_scheme not in NUM_LABELS:
        raise ValueError(f"unknown label scheme '{label_scheme}' for a PRM; known: {', '.join(NUM_LABELS)}")
    spec = spec or PRMSpec(label_scheme=label_scheme, separator=separator)
    kind = KINDS.get(spec.prm_kind)
    path = resolve(name_or_path)
    tok = kind.load_tokenizer(path, spec, trust_remote_code)
    kw: dict[str, Any] = {"num_labels": NUM_LABELS[label_scheme], "trust_remote_code": trust_remote_code, "ignore_mismatched_sizes": True}
    if torch_dtype is not None:
        kw["dtype"] = torch_dtype
    if load_in_4bit:
        if not use_pretrained:
            raise ValueError("load_in_4bit quantizes pretrained weights; it cannot be combined with use_pretrained=False")
    quantization = four_bit_kwargs(torch_dtype) if load_in_4bit else None
    model = kind.load_model(path, spec, dtype=kw.get("dtype"), trust_remote_code=trust_remote_code, use_pretrained=use_pretrained,
                            num_labels=kw["num_labels"], quantization=quantization)
    if load_in_4bit and use_pretrained:
        _own_cpu_tensors(model)
    kind.prepare_tokenizer(tok, model, spec)
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
    KINDS.get("token_cls").prepare_tokenizer(tok, model, PRMSpec(separator=separator))


def load_prm(
    name_or_path: str,
    kind: str | None = None,
    trust_remote_code: bool = False,
    *,
    torch_dtype: torch.dtype | str | None = None,
    device: str | None = None,
    load_in_4bit: bool | None = None,
    critic: dict[str, Any] | None = None,
    **spec_fields: Any,
) -> PRM:
    """The one loader: a PRM saved here (``prm_config.json``), a published PRM by hub id or local
    copy, or any checkpoint whose kind is detected from its config (architectures) or forced with
    ``kind``. ``spec_fields`` override the spec (e.g. ``max_length=2048``). Unknown layouts raise
    `PRMLoadError` (a ValueError) with one line that lists the kinds; an unknown kind name raises
    `prm.registry.UnknownName`. ``load_in_4bit``: None loads an adapter's base as it was trained
    (4-bit after QLoRA), True/False forces 4-bit/full weights.

    ``device="auto"`` puts the model on the GPU when there is one; ``torch_dtype="auto"`` is bf16 on
    a GPU and fp32 on a CPU (the published PRMs are bf16 checkpoints).

    ``claude:<model id>`` is an LLM critic (`prm.models.critic.ClaudeCritic`, the same scoring
    interface) built with the ``critic`` settings (cache_path, yes, max_cost_usd, samples, ...)."""
    from transformers import AutoTokenizer

    from prm.models.critic import is_critic, load_critic

    if is_critic(name_or_path):
        if kind is not None:
            raise PRMLoadError(f"{name_or_path} is an LLM critic; --kind {kind} does not apply to it")
        return load_critic(name_or_path, **(critic or {}))  # type: ignore[return-value]  # duck-typed PRM

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else None
    if isinstance(torch_dtype, str):  # the names --dtype takes (`prm.config.DeviceArgs`)
        from prm.config import DTYPE_SPELLINGS, dtype_name, resolve_dtype

        name = dtype_name(torch_dtype)
        if name is None:
            raise PRMLoadError(f"unknown dtype '{torch_dtype}'; known: {', '.join(DTYPE_SPELLINGS)}")
        torch_dtype = resolve_dtype(name, device or "cpu")

    if kind is not None:
        KINDS.get(kind)  # an unknown name lists the kinds
    path = resolve(name_or_path)
    if Path(path, PRM_CONFIG).is_file():
        spec = PRMSpec.load(path)
        if kind is not None and kind != spec.prm_kind:
            raise PRMLoadError(f"{name_or_path} was saved as a '{spec.prm_kind}' PRM ({PRM_CONFIG}); --kind {kind} contradicts it")
    else:
        found = {"prm_kind": kind, **KIND_DEFAULTS[kind]} if kind else detect_kind(path)
        if kind:  # a forced kind keeps what a known id says about its layout
            from prm.models.kinds import known_model

            k = known_model(path) or known_model(name_or_path)
            if k and k["prm_kind"] == kind:
                found = k
        spec = PRMSpec(backbone=name_or_path, **found)
    for k, v in spec_fields.items():
        if not hasattr(spec, k):
            raise PRMLoadError(f"unknown PRM spec field '{k}'")
        setattr(spec, k, v)
    kind_cls = KINDS.get(spec.prm_kind)
    four_bit = bool(spec.extra.get("load_in_4bit", False)) if load_in_4bit is None else load_in_4bit
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if spec.adapter:
        from peft import PeftModel

        base, _ = load_backbone(spec.backbone, spec.label_scheme, spec.separator, torch_dtype=torch_dtype,
                                trust_remote_code=trust_remote_code, spec=spec, load_in_4bit=four_bit)
        if len(tok) != base.get_input_embeddings().weight.shape[0]:
            base.resize_token_embeddings(len(tok))
        model = PeftModel.from_pretrained(base, path)
    else:
        num = 1 if spec.prm_kind == "value_head" else NUM_LABELS[spec.label_scheme]
        model = kind_cls.load_model(path, spec, dtype=torch_dtype, trust_remote_code=trust_remote_code, num_labels=num,
                                    quantization=four_bit_kwargs(torch_dtype) if load_in_4bit else None)
        if load_in_4bit:
            _own_cpu_tensors(model)
    if spec.adapter and not four_bit:
        spec.extra.pop("load_in_4bit", None)  # what this object holds now
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # scoring pads on the right; padded positions are masked
    base_cfg = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    spec.kind = "causal" if is_causal(base_cfg) else "encoder"
    if device and not (four_bit or load_in_4bit):  # a 4-bit model was placed when it loaded and cannot move
        model.to(device)
    model.eval()
    return PRM(model, tok, spec)


class PRM:
    """A model, its tokenizer, its `PRMSpec` and its kind; scores steps in one forward pass per
    solution, batched by length, sharing the problem's tokens among solutions of one problem."""

    def __init__(self, model: Any, tokenizer: Any, spec: PRMSpec):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.kind: Kind = KINDS.get(spec.prm_kind)(spec, tokenizer)

    @classmethod
    def from_backbone(cls, name_or_path: str, spec: PRMSpec | None = None, **kw: Any) -> PRM:
        """A new PRM of ``spec.prm_kind`` on a backbone (its head, where it has one, is new)."""
        spec = spec or PRMSpec()
        model, tok = load_backbone(name_or_path, spec.label_scheme, spec.separator, spec=spec, **kw)
        spec.backbone = spec.backbone or name_or_path
        if kw.get("load_in_4bit"):
            spec.extra["load_in_4bit"] = True  # `load` rebuilds the same 4-bit base under a saved adapter
        spec.kind = "causal" if is_causal(model.config) else "encoder"
        return cls(model, tok, spec)

    @classmethod
    def load(cls, path: str | Path, *, torch_dtype: torch.dtype | str | None = None, trust_remote_code: bool = False, kind: str | None = None,
             load_in_4bit: bool | None = None, device: torch.device | str | None = None) -> PRM:
        """Load a PRM saved by `save` (full model or PEFT adapter), or any PRM `load_prm` knows, onto
        ``device`` (None: the CPU; "auto": the GPU when there is one)."""
        return load_prm(str(path), kind, trust_remote_code, torch_dtype=torch_dtype, load_in_4bit=load_in_4bit, device=device)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.spec.adapter = hasattr(self.model, "peft_config")
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.spec.save(path)

    @property
    def positive_class(self) -> int:
        return self.kind.positive_class()

    def encode(self, prompt: str, steps: Sequence[str], labels: Sequence[float | None] | None = None, **kw: Any) -> StepEncoding | None:
        """The training/inference tokenization of this PRM's kind, with its truncation."""
        s = self.spec
        opts: dict[str, Any] = dict(max_length=s.max_length, max_prompt_length=s.max_prompt_length, max_completion_length=s.max_completion_length)
        opts.update(kw)
        return self.kind.encode(prompt, steps, labels, **opts)

    @property
    def shares_prefix(self) -> bool:
        """Whether a score depends only on the tokens before it (causal attention), so solutions of
        one problem can share the problem's key/value cache."""
        return self.spec.kind == "causal" and self.kind.prefix_sharing

    @torch.no_grad()
    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]], batch_size: int = 16, all_classes: bool = False) -> list[list[Any]]:
        """P(step correct) for every step of every (problem, steps) item: one forward pass per
        solution, length-sorted batches. For a causal model, solutions of a problem that occurs
        more than once run the tokens they share once (a key/value cache copied to each), which
        gives the same scores. Steps removed by truncation get no score (shorter list).
        ``all_classes``: each step's probability of every class (a list) instead of P(correct)."""
        encs = [self.encode(p, st) for p, st in items]
        return self.score_encoded(encs, batch_size, [p for p, _ in items], all_classes=all_classes)

    @torch.no_grad()
    def score_encoded(self, encs: Sequence[Any], batch_size: int = 16, problems: Sequence[str] | None = None,
                      all_classes: bool = False) -> list[list[Any]]:
        """`score_batch` for solutions already encoded by `encode` (anything with ``input_ids`` and
        ``score_positions``; None: nothing to score). ``problems`` (one per solution) lets solutions
        of one problem share their common tokens."""
        self.model.eval()
        out: list[list[Any]] = [[] for _ in encs]
        ok = [i for i, e in enumerate(encs) if e is not None]
        singles = ok
        if self.shares_prefix and problems is not None:
            groups: dict[str, list[int]] = defaultdict(list)
            for i in ok:
                groups[problems[i]].append(i)
            singles = [g[0] for g in groups.values() if len(g) == 1]
            for g in groups.values():
                if len(g) > 1:
                    self._score_shared(encs, g, batch_size, out)
        self._score_plain(encs, sorted(singles, key=lambda i: len(encs[i].input_ids)), batch_size, out)
        return out if all_classes else [[step[self.positive_class] for step in o] for o in out]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _probs(self, **inputs: Any) -> torch.Tensor:
        """Every class's probability at every position: (batch, seq, classes)."""
        return self.kind.step_logits(self.model, **inputs).float().softmax(-1).cpu()

    def _pad(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _score_plain(self, encs: list, order: list[int], batch_size: int, out: list) -> None:
        device, pad = self._device(), self._pad()
        lengths = [len(encs[i].input_ids) for i in order]
        for lo, hi in length_batches(lengths, batch_size, CPU_MAX_PADDING if device.type == "cpu" else None):
            idx = order[lo:hi]
            width = max(len(encs[i].input_ids) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            at = torch.zeros((len(idx), width), dtype=torch.bool)  # the positions read (an encoder computes its last layer only there)
            for r, i in enumerate(idx):  # right padding: positions stay as encoded
                n = len(encs[i].input_ids)
                ids[r, :n] = torch.tensor(encs[i].input_ids)
                att[r, :n] = 1
                at[r, encs[i].score_positions] = True
            probs = self._probs(at=at.to(device), input_ids=ids.to(device), attention_mask=att.to(device))
            for r, i in enumerate(idx):
                out[i] = probs[r, encs[i].score_positions].tolist()

    def _score_shared(self, encs: list, group: list[int], batch_size: int, out: list) -> None:
        """Solutions of one problem, arranged as a prefix tree: tokens shared by several solutions
        (the problem, and the leading steps they have in common) run once, their scores read once,
        and their key/value cache is copied to what follows. Exact for causal attention."""
        got: dict[int, dict[int, float]] = {i: {} for i in group}
        self._score_tree(encs, group, None, 0, batch_size, got)
        for i in group:
            out[i] = [got[i][p] for p in encs[i].score_positions]

    def _score_tree(self, encs: list, group: list[int], cache: Any, P: int, batch_size: int, got: dict) -> None:
        """``cache`` holds the first ``P`` tokens, common to every solution of ``group`` (None: P = 0)."""
        from transformers import DynamicCache

        seqs = [encs[i].input_ids for i in group]
        Q = min(len(s) for s in seqs)
        for s in seqs[1:]:
            Q = next((j for j in range(P, Q) if s[j] != seqs[0][j]), Q)
        # a shared run pays for itself when it saves more tokens than one extra (small) pass costs
        if len(group) == 1 or (len(group) - 1) * (Q - P) < SHARED_MIN_SAVED_TOKENS:
            self._score_suffixes(encs, group, cache, P, batch_size, got)
            return
        device = self._device()
        c = DynamicCache() if cache is None else _copy_cache(cache, 1)
        probs = self._probs(input_ids=torch.tensor([seqs[0][P:Q]], device=device), attention_mask=torch.ones((1, Q), dtype=torch.long, device=device),
                            position_ids=torch.arange(P, Q, device=device)[None], past_key_values=c, use_cache=True)[0]  # (Q - P,)
        for i in group:
            for p in encs[i].score_positions:
                if P <= p < Q:
                    got[i][p] = probs[p - P].tolist()
        branches: dict[int, list[int]] = defaultdict(list)
        for i in group:
            if len(encs[i].input_ids) > Q:
                branches[encs[i].input_ids[Q]].append(i)
        alone = [i for b in branches.values() if len(b) == 1 for i in b]
        for b in branches.values():
            if len(b) > 1:
                self._score_tree(encs, b, c, Q, batch_size, got)
        if alone:
            self._score_suffixes(encs, alone, c, Q, batch_size, got)

    def _score_suffixes(self, encs: list, group: list[int], cache: Any, P: int, batch_size: int, got: dict) -> None:
        """Each solution's tokens after the first ``P`` (held by ``cache``), length-sorted batches,
        each continuing from a copy of the cache."""
        device, pad = self._device(), self._pad()
        order = sorted(group, key=lambda i: len(encs[i].input_ids))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(1, max(len(encs[i].input_ids) for i in idx) - P)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), P + width), dtype=torch.long)
            att[:, :P] = 1
            for r, i in enumerate(idx):  # right padding after each solution's own tokens
                n = len(encs[i].input_ids) - P
                ids[r, :n] = torch.tensor(encs[i].input_ids[P:])
                att[r, : P + max(n, 1)] = 1
            kw: dict[str, Any] = {}
            if cache is not None:
                kw = {"position_ids": torch.arange(P, P + width).expand(len(idx), -1).to(device),
                      "past_key_values": _copy_cache(cache, len(idx)), "use_cache": True}
            probs = self._probs(input_ids=ids.to(device), attention_mask=att.to(device), **kw)  # (batch, width, classes)
            for r, i in enumerate(idx):
                for p in encs[i].score_positions:
                    if p >= P:
                        got[i][p] = probs[r, p - P].tolist()

    @torch.no_grad()
    def score_candidates(self, problem: str, candidates: Sequence[Sequence[str]], batch_size: int = 16) -> list[list[float]]:
        """P(step correct) for each step of N candidate solutions of ONE problem (best-of-N): the
        problem's tokens run once (causal models), the same scores as separate passes."""
        return self.score_batch([(problem, c) for c in candidates], batch_size)

    def score_steps(self, problem: str, steps: Sequence[str]) -> list[float]:
        """P(step correct) for each step of one solution."""
        return self.score_batch([(problem, steps)])[0]


def length_batches(lengths: Sequence[int], batch_size: int, max_padding: float | None = None) -> list[tuple[int, int]]:
    """Cut ``lengths`` (ascending) into ``[lo, hi)`` batches of at most ``batch_size``; with
    ``max_padding``, also where padding to the batch's longest item would pass that share of the
    batch's tokens."""
    out, lo, real = [], 0, 0
    for j, n in enumerate(lengths):
        size = j - lo + 1
        if size > batch_size or (max_padding is not None and size > 1 and n * size - (real + n) > max_padding * n * size):
            out.append((lo, j))
            lo, real = j, 0
        real += n
    if lo < len(lengths):
        out.append((lo, len(lengths)))
    return out


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
