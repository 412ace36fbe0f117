"""Key/value cache for step-at-a-time search: one shared prefix, per-row tails, no copies of the prefix.

A search step runs a batch of rows (continuations) that all start with the same problem prompt. The
plain transformers cache holds the prompt's keys and values once per row and re-concatenates the
whole cache at every decoding step (``torch.cat``), so a decoding step reads and writes
rows x (prompt + tail) keys and values per layer. `RowCache` instead holds:

- ``prefix``: the prompt's keys and values once, batch 1, per layer ``(1, kv_heads, P, head_dim)``;
- ``keys``/``values``: each row's own tokens after the prompt in a preallocated buffer per layer
  ``(rows, kv_heads, capacity, head_dim)``, written in place (no concatenation);
- ``valid``: ``(rows, capacity)``, which buffer columns a row attends to (padding and tokens a row
  generated after it stopped are not).

`shared_prefix_attention` (registered with transformers' attention interface under
`ATTENTION_NAME`) attends every query to the prefix with ONE matrix product over all rows (the
prefix is read once, not once per row) and to its own row's tail, and joins the two parts with one
softmax (the cascade / Hydragen decomposition: Juravsky et al., 2024, "Hydragen: High-Throughput LLM
Inference with Shared Prefixes"). Without a prefix (the recomputing baseline, which holds every
row's whole sequence as its tail) it is the plain scaled dot-product attention on the buffer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION_NAME = "prm_shared_prefix"
_MIN = torch.finfo(torch.float32).min


class RowCache:
    """Duck-typed transformers cache (``update``/``get_seq_length``) for a batch of rows; the caller
    sets ``valid`` for the columns it is about to write and calls `advance` after each forward pass.
    Pass it to the model as ``past_key_values=cache, prm_kv=cache, attention_mask=cache.mask(q)``."""

    is_compileable = False

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, keys: list[torch.Tensor], values: list[torch.Tensor],
                 valid: torch.Tensor, length: int):
        self.prefix, self.keys, self.values, self.valid, self.length = prefix, keys, values, valid, length

    @classmethod
    def empty(cls, model: Any, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, rows: int, capacity: int) -> RowCache:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        p = next(model.parameters())
        shape = (rows, heads, capacity, dim)
        keys = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.num_hidden_layers)]
        values = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.num_hidden_layers)]
        return cls(prefix, keys, values, torch.zeros((rows, capacity), dtype=torch.bool, device=p.device), 0)

    @property
    def prefix_length(self) -> int:
        return 0 if not self.prefix else self.prefix[0][0].shape[2]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prefix_length + self.length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens' keys/values at the current length; return the tail so far (views)."""
        s, q = self.length, key_states.shape[2]
        self.keys[layer_idx][:, :, s : s + q] = key_states
        self.values[layer_idx][:, :, s : s + q] = value_states
        return self.keys[layer_idx][:, :, : s + q], self.values[layer_idx][:, :, : s + q]

    def advance(self, q: int) -> None:
        self.length += q

    def mask(self, q: int) -> torch.Tensor:
        """(rows, 1, q, length + q) bool for the next ``q`` tokens: valid columns, causal among the new
        tokens; every query also sees its own column, so a padding query is never fully masked."""
        n = self.length + q
        cols = torch.arange(n, device=self.valid.device)
        at = self.length + torch.arange(q, device=self.valid.device)  # column of each new query
        causal = cols[None, :] <= at[:, None]  # (q, n)
        m = self.valid[:, None, :n] & causal[None]
        m |= (cols[None, :] == at[:, None])[None]
        return m[:, None]

    def select(self, rows: torch.Tensor, capacity: int) -> RowCache:
        """A new cache whose row i is a copy of row ``rows[i]``, with room for ``capacity`` columns."""
        width = self.length

        def take(bufs: list[torch.Tensor]) -> list[torch.Tensor]:
            out = []
            for b in bufs:
                nb = b.new_zeros((len(rows), b.shape[1], capacity, b.shape[3]))
                nb[:, :, :width] = b[rows, :, :width]
                out.append(nb)
            return out

        valid = self.valid.new_zeros((len(rows), capacity))
        valid[:, :width] = self.valid[rows, :width]
        return RowCache(self.prefix, take(self.keys), take(self.values), valid, width)

    def gather(self, row: int, cols: torch.Tensor, into: RowCache, dst_row: int, start: int) -> None:
        """Copy columns ``cols`` of ``row`` into ``into``'s row ``dst_row`` from column ``start`` on."""
        n = len(cols)
        for src, dst in ((self.keys, into.keys), (self.values, into.values)):
            for s, d in zip(src, dst):
                d[dst_row, :, start : start + n] = s[row][:, cols]


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                            scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over a `RowCache` (``prm_kv``): the shared prefix once for all rows, then each row's
    tail. query (rows, heads, q, d); key/value: the tail (rows, kv_heads, n, d); attention_mask
    (rows, 1, q, n) bool. Returns (rows, q, heads, d), as transformers' attention functions do.
    Without ``prm_kv`` this is transformers' SDPA attention."""
    cache: RowCache | None = kwargs.get("prm_kv")
    if cache is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    for k in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(k) is not None:
            raise NotImplementedError(f"shared-prefix attention does not implement {k}; use reuse_prefix=False for this model")
    B, H, q, d = query.shape
    Hkv = key.shape[1]
    g = H // Hkv  # query heads per key/value head (grouped-query attention: head h reads kv head h // g)
    scale = scaling if scaling is not None else d**-0.5
    if not cache.prefix:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scale, enable_gqa=g > 1)
        return out.transpose(1, 2).contiguous(), None
    kp, vp = cache.prefix[module.layer_idx]  # (1, Hkv, P, d)
    dt = torch.float32
    qg = query.reshape(B, Hkv, g * q, d).to(dt)  # (B, Hkv, g*q, d)
    # prefix: every row's queries against the one prefix, one batched product per kv head
    sp = torch.matmul(qg.transpose(0, 1).reshape(Hkv, B * g * q, d), kp[0].to(dt).transpose(-1, -2)) * scale  # (Hkv, B*g*q, P)
    st = torch.matmul(qg, key.to(dt).transpose(-1, -2)) * scale  # (B, Hkv, g*q, n)
    m4 = attention_mask[:, :, None].expand(B, 1, g, q, attention_mask.shape[-1]).reshape(B, 1, g * q, -1)
    st = st.masked_fill(~m4, _MIN)
    mx = torch.maximum(sp.amax(-1).view(Hkv, B, g * q).transpose(0, 1), st.amax(-1))  # (B, Hkv, g*q)
    ep = torch.exp(sp - mx.transpose(0, 1).reshape(Hkv, B * g * q, 1))
    et = torch.exp(st - mx[..., None])
    den = ep.sum(-1).view(Hkv, B, g * q).transpose(0, 1) + et.sum(-1)  # (B, Hkv, g*q)
    op = torch.matmul(ep, vp[0].to(dt)).view(Hkv, B, g * q, d).transpose(0, 1)  # (B, Hkv, g*q, d)
    out = (op + torch.matmul(et, value.to(dt))) / den[..., None]
    return out.reshape(B, H, q, d).transpose(1, 2).contiguous().to(query.dtype), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


@contextlib.contextmanager
def using_shared_prefix_attention(model: Any) -> Iterator[None]:
    """Route ``model``'s attention through `shared_prefix_attention` for the duration (restored after)."""
    _register()
    before = model.config._attn_implementation
    model.config._attn_implementation = ATTENTION_NAME  # the setter carries it to sub-configs
    try:
        yield
    finally:
        model.config._attn_implementation = before
