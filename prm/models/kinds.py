"""PRM kinds: how each family of process reward models lays out steps in tokens and reads a score.

Every kind turns a (problem, steps) pair into token ids plus one *score position* per step
(`Kind.encode`) and turns a forward pass into *step logits* of shape (batch, seq, classes) whose
positive class is the probability that the step is correct (`Kind.step_logits`). Training uses the
same two functions and the one loss (`prm.models.prm.step_loss`), so every trainable kind trains on
exactly the tokens it is scored on. Formats were taken from each model's own documentation:

- ``token_cls``: a token-classification head read at the last token of "step + separator".
  ``layout="prm_lab"`` is this project's ([CLS]/BOS, prompt, separator, steps); ``layout="trl"`` is
  TRL's PRMTrainer (``tokenize_row``: BOS if any, prompt, then "step + separator" pieces, no
  separator after the prompt), which is how trl-lib/Qwen2-0.5B-Reward-Math-Sheperd and
  HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2 were trained (separator ``"\\n"``).
- ``lm_tokens``: a causal LM; a step's score is the softmax over the logits of a good and a bad
  token (``+``/``-``) at a position: ``layout="math_shepherd"`` (model card of
  peiyi9979/math-shepherd-mistral-7b-prm: ``f"{question} {output}"`` with every step followed by
  `` ки`` and steps joined by newlines, read at each ``ки``) or ``layout="chat"`` (model card of
  RLHFlow/Llama3.1-8B-PRM-Deepseek-Data: one user turn per step, the first being
  ``question + " " + step``, each answered by an assistant turn ``+``, read at the token before
  that ``+``) or ``layout="openrlhf"`` (OpenRLHF's ProcessRewardDataset/PRMLoss, as trained for
  OpenRLHF/Mistral-7b-PRM-Math-Shepherd with ``--placeholder_token ки --reward_tokens + -``: the
  Math-Shepherd text with the placeholder after each step, tokenized without special tokens, read
  at every placeholder token; reward token 0 (``+``) is the good one; right truncation drops the
  labels of the placeholders cut off). Step logits are ordered (bad, good), so class 1 is "correct"
  as for the heads.
- ``qwen_prm``: Qwen/Qwen2.5-Math-PRM-7B/72B (model card and its modeling_qwen2_rm.py): system
  prompt, user problem, assistant steps each followed by ``<extra_0>``, rendered by the chat
  template; a Qwen2 body (``model.*``) and the head ``score`` = Linear(h, h), ReLU, Linear(h, 2);
  P(correct) = softmax at each ``<extra_0>``, class 1. Loaded into `ProcessRewardHeadModel`, a
  project class with the checkpoint's weight names, so no remote code runs; ``trust_remote_code``
  loads the authors' class instead, only when asked.
- ``value_head``: Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B/7B (SkyworkAI/skywork-o1-prm-inference:
  ``prepare_input``, ``ValueHead``): ``encode(bos_token + problem + "\\n")``, then for each step
  ``encode(step)`` plus the id of ``"\\n"``; a scalar head ``v_head.summary`` = Linear(h, 1) whose
  sigmoid at each step's ``"\\n"`` is the score (architecture ``Qwen2ForPrmModel``; ``lm_head.*`` in
  the checkpoint is ignored). Step logits are (0, v) so softmax class 1 = sigmoid(v).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput

from prm.models import last_layer
from prm.models.encoding import StepEncoding, encode_steps, truncate_at_steps
from prm.registry import Registry

log = logging.getLogger(__name__)

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


# ----------------------------------------------------------------------------- model classes


class _HeadOnBody(PreTrainedModel):
    """A decoder body (``model``, any ``AutoModel`` architecture) with a head on its last hidden
    states. The attribute names are the checkpoints' weight names."""

    base_model_prefix = "model"
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # these checkpoints keep the LM head; unused
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    supports_gradient_checkpointing = True

    def __init__(self, config: Any):
        super().__init__(config)
        self.model = AutoModel.from_config(config)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None, use_cache: bool | None = None,
                inputs_embeds: torch.Tensor | None = None, **kw: Any) -> TokenClassifierOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache, inputs_embeds=inputs_embeds)
        return TokenClassifierOutput(logits=self._head(out.last_hidden_state))  # (batch, seq, classes)


class ProcessRewardHeadModel(_HeadOnBody):
    """Qwen2.5-Math-PRM's layout without remote code: ``model`` + ``score`` (Linear(h, h), ReLU,
    Linear(h, num_labels)); logits (batch, seq, 2)."""

    def __init__(self, config: Any):
        super().__init__(config)
        h = config.hidden_size
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, config.num_labels))
        self.post_init()

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden)


class ValueHead(nn.Module):
    """Skywork's ``v_head``: one ``summary`` Linear(h, 1), computed in the head's dtype."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype))


class ValueHeadModel(_HeadOnBody):
    """Skywork-o1-Open-PRM's layout: ``model`` + ``v_head.summary``; logits (batch, seq, 1), the
    value before the sigmoid."""

    def __init__(self, config: Any):
        super().__init__(config)
        self.v_head = ValueHead(config.hidden_size)
        self.post_init()

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.v_head(hidden)


# ----------------------------------------------------------------------------- kinds


def _fast_offsets(tok: Any, text: str, add_special_tokens: bool) -> Any:
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"this PRM kind needs a fast tokenizer (character offsets); {type(tok).__name__} is not one")
    return tok(text, add_special_tokens=add_special_tokens)


def _token_positions(enc: Any, chars: Sequence[int], shift: int = 0) -> list[int]:
    out = []
    for c in chars:
        t = enc.char_to_token(c)
        if t is None:
            raise ValueError(f"no token covers character {c} of the rendered PRM input")
        out.append(t + shift)
    return out


def _ids(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


class Kind:
    """One PRM family: token layout (`encode`), score reading (`step_logits`, `positive_class`) and
    how its model is built and loaded. Instances hold the tokenizer and the spec."""

    name = ""
    trainable = True
    causal_only = True  # scores at a position depend only on the tokens before it (prefix sharing is exact)
    prefix_sharing = True  # solutions of one problem may share the problem's key/value cache (causal backbones)

    def __init__(self, spec: Any, tokenizer: Any):
        self.spec, self.tok = spec, tokenizer

    # --- models
    @classmethod
    def load_model(cls, path: str, spec: Any, *, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                   use_pretrained: bool = True, num_labels: int = 2, quantization: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    @classmethod
    def load_tokenizer(cls, path: str, spec: Any, trust_remote_code: bool = False) -> Any:
        """The tokenizer a new PRM of this kind on backbone ``path`` uses (the backbone's own)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def prepare_tokenizer(cls, tok: Any, model: Any, spec: Any) -> None:
        """Give the tokenizer a pad token (scoring pads on the right; padded positions are masked)."""
        if tok.pad_token_id is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tok.pad_token_id

    # --- layout and reading
    def encode(self, prompt: str, steps: Sequence[str], labels: Sequence[float | None] | None = None, *,
               max_length: int | None = None, max_prompt_length: int | None = None, max_completion_length: int | None = None,
               train_on_last_step_only: bool = False, require_label: bool = False, **_: Any) -> StepEncoding | None:
        raise NotImplementedError

    def step_logits(self, model: Any, at: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
        """(batch, seq, classes) logits whose `positive_class` softmax is P(step correct). ``at``
        (batch, seq; bool): the positions that will be read; a kind may compute only those (zeros elsewhere)."""
        return model(**inputs).logits

    def positive_class(self) -> int:
        # a custom class order (the BMUq API's label maps) records where "correct" is
        if self.spec.extra.get("positive_class") is not None:
            return int(self.spec.extra["positive_class"])
        return 2 if self.spec.label_scheme == "ternary" else 1

    def num_labels(self) -> int:
        return 3 if self.spec.label_scheme == "ternary" else 2


KINDS: Registry[type[Kind]] = Registry("PRM kind")


@KINDS.register("token_cls")
class TokenCls(Kind):
    name = "token_cls"
    causal_only = False  # decided per backbone: encoders see the whole sequence

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        from transformers import AutoModelForTokenClassification

        # ignore_mismatched_sizes: a checkpoint with another head size (e.g. a binary PRM as the start
        # of a ternary one) keeps its backbone and gets a fresh head.
        kw: dict[str, Any] = {"num_labels": num_labels, "trust_remote_code": trust_remote_code, "ignore_mismatched_sizes": True}
        if dtype is not None:
            kw["dtype"] = dtype
        kw.update(quantization or {})
        if use_pretrained:
            return AutoModelForTokenClassification.from_pretrained(path, **kw)
        config = AutoConfig.from_pretrained(path, num_labels=num_labels, trust_remote_code=trust_remote_code)
        return AutoModelForTokenClassification.from_config(config, trust_remote_code=trust_remote_code)

    @classmethod
    def prepare_tokenizer(cls, tok, model, spec):
        from prm.models.prm import SPECIAL_SEPARATORS

        super().prepare_tokenizer(tok, model, spec)
        model.config.pad_token_id = tok.pad_token_id
        if spec.separator in SPECIAL_SEPARATORS and spec.separator not in tok.get_vocab():
            tok.add_special_tokens({"additional_special_tokens": [spec.separator]})
            model.resize_token_embeddings(len(tok))

    def step_logits(self, model, at=None, **inputs):
        # an encoder's last layer only where the scores are read (`prm.models.last_layer`)
        if at is not None and last_layer.supports(model):
            return last_layer.logits_at(model, at, **inputs)
        return model(**inputs).logits

    def encode(self, prompt, steps, labels=None, **opts):
        s = self.spec
        return encode_steps(self.tok, prompt, steps, labels, separator=opts.get("separator", s.separator), layout=s.layout or "prm_lab",
                            **{k: v for k, v in opts.items() if k in _ENCODE_OPTS})


_ENCODE_OPTS = ("max_length", "max_prompt_length", "max_completion_length", "train_on_last_step_only", "require_label")


def _causal_lm(path: str, *, dtype=None, trust_remote_code=False, use_pretrained=True, quantization=None) -> Any:
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kw["dtype"] = dtype
    kw.update(quantization or {})
    if use_pretrained:
        return AutoModelForCausalLM.from_pretrained(path, **kw)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), trust_remote_code=trust_remote_code)


LM_LAYOUTS = ("math_shepherd", "chat", "openrlhf")


@KINDS.register("lm_tokens")
class LMTokens(Kind):
    name = "lm_tokens"

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        # the last id of each token's encoding, as the model cards take them
        self.good_id = self.tok.encode(spec.good_token or "+")[-1]
        self.bad_id = self.tok.encode(spec.bad_token or "-")[-1]
        if self.good_id == self.bad_id:
            raise ValueError(f"good token {spec.good_token!r} and bad token {spec.bad_token!r} map to the same id")

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        return _causal_lm(path, dtype=dtype, trust_remote_code=trust_remote_code, use_pretrained=use_pretrained, quantization=quantization)

    @classmethod
    def prepare_tokenizer(cls, tok, model, spec):
        super().prepare_tokenizer(tok, model, spec)
        # a step tag the tokenizer cannot write as one piece becomes an added token (never split)
        if (spec.layout or "math_shepherd") in ("math_shepherd", "openrlhf") and len(_ids(tok, spec.separator)) != 1:
            tok.add_tokens([spec.separator])
            model.resize_token_embeddings(len(tok))

    def encode(self, prompt, steps, labels=None, **opts):
        if (self.spec.layout or "math_shepherd") == "math_shepherd":
            return self._encode_tags(prompt, steps, labels, **opts)
        if self.spec.layout == "chat":
            return self._encode_chat(prompt, steps, labels, **opts)
        if self.spec.layout == "openrlhf":
            return self._encode_placeholder(prompt, steps, labels, **opts)
        raise ValueError(f"unknown lm_tokens layout '{self.spec.layout}'; known: {', '.join(LM_LAYOUTS)}")

    def _encode_placeholder(self, prompt, steps, labels, **opts):
        # OpenRLHF's ProcessRewardDataset: the text holds a placeholder token where each step's
        # reward goes (Math-Shepherd's input: "{question} {step 1} ки\n{step 2} ки ..."), tokenized
        # WITHOUT special tokens; the label sits at every token equal to the placeholder's one id
        tag = self.spec.separator
        tag_ids = _ids(self.tok, tag)
        if len(tag_ids) != 1:
            raise ValueError(f"placeholder {tag!r} must be one token of the tokenizer, got {len(tag_ids)}")
        if any(tag in t for t in (prompt, *steps)):
            raise ValueError(f"the problem or a step contains the placeholder {tag!r}; it would take another step's label")
        ids = self.tok(f"{prompt} " + "\n".join(f"{st} {tag}" for st in steps), add_special_tokens=False)["input_ids"]
        pos = [i for i, t in enumerate(ids) if t == tag_ids[0]]
        return truncate_at_steps(ids, pos, labels, n_steps=len(steps),
                                 **{k: v for k, v in opts.items() if k in ("max_length", "train_on_last_step_only", "require_label")})

    def _encode_tags(self, prompt, steps, labels, **opts):
        # "{question} {step 1} ки\n{step 2} ки ... {step n} ки", tokenized whole with the
        # tokenizer's own special tokens (Mistral: BOS); read at each tag
        tag = self.spec.separator
        text, marks = f"{prompt} ", []
        for i, st in enumerate(steps):
            text += f"{st} "
            marks.append(len(text))
            text += tag + ("\n" if i < len(steps) - 1 else "")
        enc = _fast_offsets(self.tok, text, add_special_tokens=True)
        pos = _token_positions(enc, marks)
        return truncate_at_steps(enc["input_ids"], pos, labels, n_steps=len(steps),
                                 **{k: v for k, v in opts.items() if k in ("max_length", "train_on_last_step_only", "require_label")})

    def _encode_chat(self, prompt, steps, labels, **opts):
        # one user turn per step (the first prefixed by the question), each answered "+"; the score
        # is read where the model predicts that "+" (the token before it)
        conv: list[dict] = []
        marks = []
        good = self.spec.good_token or "+"
        full = ""
        for k, st in enumerate(steps):
            conv.append({"role": "user", "content": f"{prompt} {st}" if k == 0 else st})
            conv.append({"role": "assistant", "content": good})
            part = self.tok.apply_chat_template(conv, tokenize=False)
            if not part.startswith(full):
                raise ValueError("the chat template does not render a conversation as a prefix of its continuation")
            full = part
            marks.append(part.rfind(good))
        enc = _fast_offsets(self.tok, full, add_special_tokens=False)
        pos = _token_positions(enc, marks, shift=-1)
        return truncate_at_steps(enc["input_ids"], pos, labels, n_steps=len(steps),
                                 **{k: v for k, v in opts.items() if k in ("max_length", "train_on_last_step_only", "require_label")})

    def step_logits(self, model, at=None, **inputs):
        # Only the two tokens' rows of the LM head are needed: (batch, seq, hidden) @ (hidden, 2)
        # instead of the full vocabulary. Ordered (bad, good): class 1 = correct.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        body = getattr(base, getattr(base, "base_model_prefix", "model"), None)
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        idx = [self.bad_id, self.good_id]
        if body is None or head is None or getattr(base.config, "final_logit_softcapping", None):
            return model(**inputs).logits[..., idx]
        hidden = body(**inputs).last_hidden_state
        w = head.weight[idx]
        b = head.bias[idx] if getattr(head, "bias", None) is not None else None
        return F.linear(hidden.to(w.dtype), w, b)


class _HeadKind(Kind):
    model_class: type[_HeadOnBody]
    architecture = ""

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        config = AutoConfig.from_pretrained(path)
        config.num_labels = num_labels
        if use_pretrained:
            kw: dict[str, Any] = {"config": config}
            if dtype is not None:
                kw["dtype"] = dtype
            kw.update(quantization or {})
            return cls.model_class.from_pretrained(path, **kw)
        return cls.model_class(config)


@KINDS.register("qwen_prm")
class QwenPRM(_HeadKind):
    name = "qwen_prm"
    model_class = ProcessRewardHeadModel
    architecture = "Qwen2ForProcessRewardModel"

    @classmethod
    def load_model(cls, path, spec, *, dtype=None, trust_remote_code=False, use_pretrained=True, num_labels=2, quantization=None):
        if trust_remote_code and use_pretrained:
            # the explicit escape: the checkpoint's own modeling code
            kw: dict[str, Any] = {"trust_remote_code": True}
            if dtype is not None:
                kw["dtype"] = dtype
            return AutoModel.from_pretrained(path, **kw)
        return super().load_model(path, spec, dtype=dtype, use_pretrained=use_pretrained, num_labels=num_labels, quantization=quantization)

    @classmethod
    def prepare_tokenizer(cls, tok, model, spec):
        super().prepare_tokenizer(tok, model, spec)
        if len(_ids(tok, spec.separator)) != 1:
            tok.add_special_tokens({"additional_special_tokens": [spec.separator]})
            model.resize_token_embeddings(len(tok))

    def encode(self, prompt, steps, labels=None, **opts):
        sep = self.spec.separator
        content = sep.join(steps) + sep
        messages = [{"role": "system", "content": self.spec.system_prompt if self.spec.system_prompt is not None else QWEN_PRM_SYSTEM},
                    {"role": "user", "content": prompt}, {"role": "assistant", "content": content}]
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        start = text.rfind(content)
        if start < 0:
            raise ValueError("the chat template changed the assistant's steps; cannot find the step tags")
        marks, at = [], start
        for st in steps:
            at += len(st)
            marks.append(at)
            at += len(sep)
        enc = _fast_offsets(self.tok, text, add_special_tokens=True)  # tokenizer.encode(conversation_str), as the card does
        pos = _token_positions(enc, marks)
        return truncate_at_steps(enc["input_ids"], pos, labels, n_steps=len(steps),
                                 **{k: v for k, v in opts.items() if k in ("max_length", "train_on_last_step_only", "require_label")})

    def step_logits(self, model, at=None, **inputs):
        out = model(**inputs)
        return out.logits if hasattr(out, "logits") else out[0]  # the remote class returns a tuple-like output


@KINDS.register("value_head")
class ValueHeadKind(_HeadKind):
    name = "value_head"
    model_class = ValueHeadModel
    architecture = "Qwen2ForPrmModel"

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        self.sep_id = self.tok.encode(spec.separator)[-1]

    def encode(self, prompt, steps, labels=None, **opts):
        # pieces tokenized separately, exactly as Skywork's prepare_input does
        tok = self.tok
        ids = tok.encode((tok.bos_token or "") + prompt + "\n")
        pos = []
        for st in steps:
            ids = ids + tok.encode(st) + [self.sep_id]
            pos.append(len(ids) - 1)
        return truncate_at_steps(ids, pos, labels, n_steps=len(steps),
                                 **{k: v for k, v in opts.items() if k in ("max_length", "train_on_last_step_only", "require_label")})

    def step_logits(self, model, **inputs):
        v = model(**inputs).logits.float()  # (batch, seq, 1)
        return torch.cat([torch.zeros_like(v), v], dim=-1)  # softmax class 1 = sigmoid(v)

    def num_labels(self) -> int:
        return 1


# ----------------------------------------------------------------------------- detection


class PRMLoadError(ValueError):
    """A user-side problem with what was asked to load (unknown layout, contradicting --kind, bad
    dtype); scripts print it as one line."""

# Published PRMs by hub id: the kind and the spec fields their documentation fixes. A local
# directory whose name is a repository's name (a snapshot download) is recognised too.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "peiyi9979/math-shepherd-mistral-7b-prm": {"prm_kind": "lm_tokens", "layout": "math_shepherd", "separator": "ки", "good_token": "+", "bad_token": "-"},
    "OpenRLHF/Mistral-7b-PRM-Math-Shepherd": {"prm_kind": "lm_tokens", "layout": "openrlhf", "separator": "ки", "good_token": "+", "bad_token": "-"},
    "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data": {"prm_kind": "lm_tokens", "layout": "chat", "separator": "", "good_token": "+", "bad_token": "-"},
    "RLHFlow/Llama3.1-8B-PRM-Mistral-Data": {"prm_kind": "lm_tokens", "layout": "chat", "separator": "", "good_token": "+", "bad_token": "-"},
    "Qwen/Qwen2.5-Math-PRM-7B": {"prm_kind": "qwen_prm", "separator": "<extra_0>", "system_prompt": QWEN_PRM_SYSTEM},
    "Qwen/Qwen2.5-Math-PRM-72B": {"prm_kind": "qwen_prm", "separator": "<extra_0>", "system_prompt": QWEN_PRM_SYSTEM},
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B": {"prm_kind": "value_head", "separator": "\n"},
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B": {"prm_kind": "value_head", "separator": "\n"},
    "trl-lib/Qwen2-0.5B-Reward-Math-Sheperd": {"prm_kind": "token_cls", "layout": "trl", "separator": "\n"},
    "HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2": {"prm_kind": "token_cls", "layout": "trl", "separator": "\n"},
}

# What a kind means when it is forced (--kind) or found from the architecture alone.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "token_cls": {"layout": "trl", "separator": "\n"},  # a token-classification checkpoint without prm_config.json: TRL's
    "lm_tokens": {"layout": "math_shepherd", "separator": "ки", "good_token": "+", "bad_token": "-"},
    "qwen_prm": {"separator": "<extra_0>", "system_prompt": QWEN_PRM_SYSTEM},
    "value_head": {"separator": "\n"},
    "step_cls": {"layout": "problem+previous+step"},  # a sequence-classification checkpoint
    "step_embeddings": {"layout": "problem+previous+step"},  # needs extra.featurizer_model: saved by PRM lab only
}

ARCHITECTURES = {"Qwen2ForProcessRewardModel": "qwen_prm", "Qwen2ForPrmModel": "value_head",
                 "ProcessRewardHeadModel": "qwen_prm", "ValueHeadModel": "value_head"}


def known_model(name_or_path: str) -> dict[str, Any] | None:
    """The spec fields of a published PRM named by hub id or by a local folder of that name."""
    if name_or_path in KNOWN_MODELS:
        return dict(KNOWN_MODELS[name_or_path])
    base = Path(str(name_or_path).rstrip("/")).name.lower()
    for hub_id, fields in KNOWN_MODELS.items():
        if hub_id.split("/")[-1].lower() == base:
            return dict(fields)
    return None


def read_config(name_or_path: str) -> dict:
    """config.json of a local directory or hub id (a dict; empty when there is none)."""
    p = Path(name_or_path)
    if p.is_dir():
        f = p / "config.json"
        return json.loads(f.read_text()) if f.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name_or_path, "config.json")).read_text())
    except Exception as e:  # noqa: BLE001 - reported as one line by detect_kind's caller
        raise FileNotFoundError(f"cannot read config.json of '{name_or_path}' (not a local directory; hub: {type(e).__name__})") from None


def detect_kind(name_or_path: str, config: dict | None = None) -> dict[str, Any]:
    """Spec fields (``prm_kind`` and layout) of a PRM that has no prm_config.json: a known hub id
    or folder name first, then the config's architectures. Raises ValueError naming the kinds."""
    known = known_model(name_or_path)
    if known:
        return known
    config = read_config(name_or_path) if config is None else config
    archs = config.get("architectures") or []
    for a in archs:
        if a in ARCHITECTURES:
            kind = ARCHITECTURES[a]
            return {"prm_kind": kind, **KIND_DEFAULTS[kind]}
        if a.endswith("ForTokenClassification"):
            return {"prm_kind": "token_cls", **KIND_DEFAULTS["token_cls"]}
    raise PRMLoadError(f"cannot tell which kind of PRM '{name_or_path}' is (architectures {archs or 'unknown'}, no prm_config.json, "
                     f"not a known hub id); pass --kind, one of: {', '.join(KINDS.names())}")


# the BMUq featurizers register themselves as kinds too (step_cls, step_embeddings)
from prm.models import step_kinds  # noqa: E402,F401
