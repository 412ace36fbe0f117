"""Stepwise records -> token ids and step labels (through the one encoding), and the collator."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import torch

from prm.models.encoding import IGNORE, encode_steps

log = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    rows: int = 0
    dropped_rows: int = 0  # no scorable (labeled) step left after truncation
    truncated_steps: int = 0  # whole steps removed by truncation from the rows that were kept
    labeled_steps: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def as_stepwise(data: Any) -> datasets.Dataset:
    """Accept a stepwise `datasets.Dataset`, or rows of another supported format held in memory
    (the old ProcessRewardTrainer list of ``{input, value, label}`` dicts, TRL stepwise rows)."""
    from prm.data import convert_rows

    if isinstance(data, datasets.Dataset) and "label_scheme" in data.column_names:
        return data
    rows = data.to_list() if isinstance(data, datasets.Dataset) else list(data)
    if not rows:
        raise ValueError("empty training data")
    cols = set(rows[0])
    fmt = "prt" if {"input", "value", "label"} <= cols else "trl" if {"prompt", "completions", "labels"} <= cols else None
    if fmt is None:
        raise ValueError(f"cannot tell the format of rows with fields {sorted(cols)}; convert them with prm.data.load first")
    from prm.schema import to_dataset

    return to_dataset(convert_rows(fmt, ((f"row {i}", r) for i, r in enumerate(rows))))


def label_scheme_of(ds: datasets.Dataset) -> str:
    schemes = set(ds.unique("label_scheme"))
    labeled = schemes - {"none"}
    if len(labeled) != 1:
        raise ValueError(f"a PRM trains on one label scheme; this data has {sorted(schemes)}")
    return labeled.pop()


def encode_dataset(
    ds: datasets.Dataset,
    tokenizer: Any,
    *,
    separator: str = "\n",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    train_on_last_step_only: bool = False,
    num_proc: int | None = None,
    name: str = "train",
    encoder: Callable[..., Any] | None = None,
) -> tuple[datasets.Dataset, EncodeStats]:
    """Tokenize stepwise records; drop rows with no labeled step left and count them (logged once).

    ``encoder`` is a PRM kind's ``encode`` (`prm.models.kinds.Kind.encode`, the one scoring
    layout); without it the token_cls layout with ``separator`` is used.
    Keeps an optional ``weight`` column (per-example loss weight)."""

    def enc(row: dict) -> dict:
        opts = dict(max_length=max_length, max_prompt_length=max_prompt_length, max_completion_length=max_completion_length,
                    train_on_last_step_only=train_on_last_step_only, require_label=True)
        if encoder is not None:
            e = encoder(row["prompt"], row["completions"], row["labels"], **opts)
        else:
            e = encode_steps(tokenizer, row["prompt"], row["completions"], row["labels"], separator=separator, **opts)
        if e is None:
            return {"input_ids": [], "labels": [], "length": 0, "n_truncated": 0, "keep": False}
        return {"input_ids": e.input_ids, "labels": e.labels, "length": len(e.input_ids), "n_truncated": e.n_truncated, "keep": True}

    keep_cols = {"weight"} & set(ds.column_names)
    out = ds.map(enc, remove_columns=[c for c in ds.column_names if c not in keep_cols], num_proc=num_proc, desc=f"tokenizing {name}")
    stats = EncodeStats(rows=len(out), truncated_steps=int(sum(out["n_truncated"])))
    kept = out.filter(lambda k: k, input_columns="keep", num_proc=num_proc)
    stats.dropped_rows = stats.rows - len(kept)
    stats.labeled_steps = int(sum(sum(1 for v in labs if v != IGNORE) for labs in kept["labels"]))
    kept = kept.remove_columns(["keep", "n_truncated"])
    if stats.dropped_rows or stats.truncated_steps:
        log.warning(
            "%s: dropped %d of %d rows with no labeled step within the length limits; truncation removed %d steps",
            name, stats.dropped_rows, stats.rows, stats.truncated_steps,
        )
    return kept, stats


class StepCollator:
    """Pads a batch on the right to its longest row (dynamic padding). Labels stay float32 so soft
    targets are never rounded; hard class ids are turned into longs inside the loss.

    ``pack=True`` first fits the batch's rows, longest first, into as few sequences as hold them at
    the longest row's width (first-fit decreasing), so short rows fill what would be padding. Each
    packed sequence gets ``position_ids`` restarting at every row and a (seqs, 1, width, width)
    boolean ``attention_mask`` that keeps attention inside each row (and causal within it for a
    causal backbone); labels stay at their tokens and per-example ``weights`` become per-token.
    The same rows make the same optimizer step, so the loss is the unpacked batch's."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, pack: bool = False, causal: bool = False):
        self.pad = pad_token_id
        self.multiple = pad_to_multiple_of
        self.pack = pack
        self.causal = causal

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.pack:
            return self._packed(rows)
        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), float(IGNORE), dtype=torch.float32)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"])
            att[i, :n] = 1
            labels[i, :n] = torch.as_tensor(r["labels"], dtype=torch.float32)
        batch = {"input_ids": ids, "attention_mask": att, "labels": labels}
        if "weight" in rows[0]:
            batch["weights"] = torch.tensor([float(r["weight"]) for r in rows], dtype=torch.float32)
        return batch

    def _packed(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        bins: list[list[dict]] = []
        free: list[int] = []
        for r in sorted(rows, key=lambda r: -len(r["input_ids"])):  # first-fit decreasing
            n = len(r["input_ids"])
            j = next((j for j, f in enumerate(free) if f >= n), None)
            if j is None:
                bins.append([])
                free.append(width)
                j = len(bins) - 1
            bins[j].append(r)
            free[j] -= n
        m = len(bins)
        ids = torch.full((m, width), self.pad, dtype=torch.long)
        pos = torch.zeros((m, width), dtype=torch.long)
        seg = torch.full((m, width), -1, dtype=torch.long)  # which row of the bin a token belongs to; -1: padding
        labels = torch.full((m, width), float(IGNORE), dtype=torch.float32)
        weights = torch.zeros((m, width), dtype=torch.float32) if "weight" in rows[0] else None
        for i, b in enumerate(bins):
            at = 0
            for k, r in enumerate(b):
                n = len(r["input_ids"])
                ids[i, at : at + n] = torch.as_tensor(r["input_ids"])
                pos[i, at : at + n] = torch.arange(n)
                seg[i, at : at + n] = k
                labels[i, at : at + n] = torch.as_tensor(r["labels"], dtype=torch.float32)
                if weights is not None:
                    weights[i, at : at + n] = float(r["weight"])
                at += n
        same = seg[:, :, None] == seg[:, None, :]  # (seqs, width, width)
        same &= (seg >= 0)[:, :, None]
        if self.causal:
            same &= torch.ones(width, width, dtype=torch.bool).tril()
        # padding attends to itself only (no empty softmax row); its outputs carry no label
        same |= torch.eye(width, dtype=torch.bool)[None] & (seg < 0)[:, :, None]
        batch = {"input_ids": ids, "position_ids": pos, "attention_mask": same[:, None], "labels": labels}
        if weights is not None:
            batch["weights"] = weights
        return batch
