"""An encoder's last layer computed only at the positions whose scores are read.

A token-classification PRM on an encoder reads its logits at the step positions only (about 4% of
a GSM8K row's tokens). Every layer but the last must run on all tokens: their outputs are the last
layer's keys and values. In the last layer, though, only the read positions need a query, an
attention output, a feed-forward pass and a classifier row, so the rest of its work (about 83% of
it: Q, O and the feed-forward of the other positions) is skipped: about one layer's worth of the
model's FLOPs (MiniLM-L6: 1/6 of its layers' work). Scores, losses and gradients equal the plain
forward pass's (the same modules and attention kernel on the same inputs; tests/test_train_levers.py).

Applies to BERT-family token classifiers (their layers share BERT's module layout); anything else
takes the plain path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

# model types whose layers have BERT's layout: attention.self.{query,key,value}, attention.output,
# intermediate, output; and whose token-classification head is dropout + a linear layer per position
BERT_LAYOUT = ("bert", "roberta", "xlm-roberta")


def _unwrap(model: Any) -> Any:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


def _last_layer(model: Any) -> Any | None:
    """The last encoder layer when ``model`` is a BERT-layout token classifier this module can run, else None."""
    base = _unwrap(model)
    cfg = getattr(base, "config", None)
    if cfg is None or cfg.model_type not in BERT_LAYOUT or getattr(cfg, "is_decoder", False) or not type(base).__name__.endswith("ForTokenClassification"):
        return None
    if getattr(cfg, "_attn_implementation", None) not in ("eager", "sdpa"):  # kernels whose mask has a row per query (or none)
        return None
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if not layers:
        return None
    last = layers[-1]
    sa = getattr(getattr(last, "attention", None), "self", None)
    needed = all(hasattr(sa, a) for a in ("query", "key", "value", "attention_head_size", "scaling", "dropout", "config"))
    needed = needed and hasattr(sys.modules.get(type(sa).__module__), "eager_attention_forward")  # transformers' v5 attention interface
    # a layer whose forward is already replaced (accelerate's device hooks) keeps its own
    if not needed or hasattr(last, "crossattention") or "forward" in vars(last) or hasattr(last, "_hf_hook"):
        return None
    return last


def supports(model: Any) -> bool:
    """Whether `logits_at` computes ``model``'s last layer only at the positions asked for."""
    return _last_layer(model) is not None


def _attention(sa: Any) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(sa).__module__].eager_attention_forward  # the model's own eager kernel
    return ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager)


def _gathered_forward(layer: Any, idx: torch.Tensor) -> Callable:
    """The layer's forward with queries only at ``idx`` (batch, P): returns (batch, P, hidden)."""
    sa = layer.attention.self
    attend = _attention(sa)

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *_: Any, **kwargs: Any) -> torch.Tensor:
        B, _T, H = hidden_states.shape
        P = idx.shape[1]
        q_in = hidden_states.gather(1, idx[..., None].expand(B, P, H))

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(B, x.shape[1], -1, sa.attention_head_size).transpose(1, 2)

        q, k, v = heads(sa.query(q_in)), heads(sa.key(hidden_states)), heads(sa.value(hidden_states))
        mask = attention_mask
        if mask is not None and mask.shape[-2] > 1:  # one row per query (a padding or a packed block mask): the kept queries' rows
            mask = mask.gather(2, idx[:, None, :, None].expand(B, mask.shape[1], P, mask.shape[-1]))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("encoder_attention_mask", "past_key_values")}
        ctx, _ = attend(sa, q, k, v, mask, dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling, **kwargs)
        attn = layer.attention.output(ctx.reshape(B, P, -1), q_in)
        return layer.output(layer.intermediate(attn), attn)

    return forward


def logits_at(model: Any, at: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """(batch, seq, classes) logits of a `supports`-ed model, computed at the positions where ``at``
    (batch, seq; bool) is true; zeros elsewhere."""
    last = _last_layer(model)
    if last is None:
        raise ValueError(f"{type(_unwrap(model)).__name__}: not a BERT-layout token classifier; use the plain forward")
    counts = at.sum(1)
    P = int(counts.max()) if at.numel() else 0
    if P == 0:
        return model(**inputs).logits
    # each row's read positions first, in order (a stable sort of "not read"), padded with position 0
    idx = torch.argsort((~at).to(torch.int8), dim=1, stable=True)[:, :P]
    valid = torch.arange(P, device=at.device)[None] < counts[:, None]
    idx = idx.masked_fill(~valid, 0)
    last.forward = _gathered_forward(last, idx)
    try:
        small = model(**inputs).logits  # (batch, P, classes): the head runs on the P positions
    finally:
        del last.forward
    full = small.new_zeros(*at.shape, small.shape[-1])
    rows = torch.arange(at.shape[0], device=at.device)[:, None].expand_as(idx)
    full[rows[valid], idx[valid]] = small[valid]
    return full
