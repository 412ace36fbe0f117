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
    Keeps the optional ``weight`` (per-example loss weight) and ``group`` (rows that may share a
    prefix, `StepCollator`) columns."""

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

    keep_cols = {"weight", "group"} & set(ds.column_names)
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


class GroupedLengthSampler(torch.utils.data.Sampler[int]):
    """Length-grouped batches that keep each group's rows (one problem's solutions) next to each
    other, so `StepCollator` can share their prefix: groups in random order (torch's global RNG,
    seeded by the Trainer), then within each run of ~``mega`` batches of rows sorted longest first,
    as transformers' LengthGroupedSampler sorts rows."""

    def __init__(self, lengths: list[int], groups: list[Any], batch_size: int, mega: int = 50):
        self.lengths, self.groups, self.batch_size, self.mega = list(lengths), list(groups), batch_size, mega

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        members: dict[Any, list[int]] = {}
        for i, g in enumerate(self.groups):
            members.setdefault(g, []).append(i)
        keys = list(members)
        order: list[int] = []
        run: list[Any] = []
        count = 0

        def flush() -> None:
            for g in sorted(run, key=lambda g: -max(self.lengths[i] for i in members[g])):
                order.extend(sorted(members[g], key=lambda i: -self.lengths[i]))
            run.clear()

        for j in torch.randperm(len(keys)).tolist():
            run.append(keys[j])
            count += len(members[keys[j]])
            if count >= self.mega * self.batch_size:
                flush()
                count = 0
        flush()
        return iter(order)


class StepCollator:
    """Pads a batch on the right to its longest row (dynamic padding). Labels stay float32 so soft
    targets are never rounded; hard class ids are turned into longs inside the loss.

    ``pack=True`` first fits the batch's rows, longest first, into as few sequences as hold them at
    the longest row's width (first-fit decreasing), so short rows fill what would be padding. Each
    packed sequence gets ``position_ids`` restarting at every row and a (seqs, 1, width, width)
    boolean ``attention_mask`` that keeps attention inside each row (and causal within it for a
    causal backbone); labels stay at their tokens and per-example ``weights`` become per-token.
    The same rows make the same optimizer step, so the loss is the unpacked batch's.

    ``share_prefix=True`` (causal backbones; implies packing) also lets the rows of one ``group``
    (one problem's solutions) share their common prefix of tokens and labels: it is held once, and
    each row's own tokens follow it with position ids continuing from it and attention to exactly
    the tokens of their own row (a tree mask), so every token's logits are those of its row alone.
    A shared labeled step counts once per row through per-token ``weights`` and the ``label_count``
    of the unshared batch, so the loss is the unshared batch's. A group's tree grows up to
    ``max_width`` tokens (then another starts); the sequences are as wide as the widest tree."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, pack: bool = False, causal: bool = False,
                 share_prefix: bool = False, max_width: int | None = None):
        self.pad = pad_token_id
        self.multiple = pad_to_multiple_of
        self.share = share_prefix and causal  # an encoder's prefix tokens see the whole row: nothing to share
        self.pack = pack or self.share
        self.causal = causal
        self.max_width = max_width

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

    def _trees(self, rows: list[dict]) -> list[_Tree]:
        """One tree per row, or with ``share`` one per group of rows (longest first), each row
        joining the tree where it shares the longest prefix while the tree stays within max_width."""
        if not self.share:
            return [_Tree.of(r, self.causal) for r in rows]
        groups: dict[Any, list[dict]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r.get("group", ("row", i)), []).append(r)
        trees: list[_Tree] = []
        for members in groups.values():
            mine: list[_Tree] = []
            for r in sorted(members, key=lambda r: -len(r["input_ids"])):
                n = len(r["input_ids"])
                fits = [(t, *t.shared(r)) for t in mine]
                fits = [f for f in fits if f[1] > 0 and (self.max_width is None or f[0].size + n - f[1] <= self.max_width)]
                if fits:
                    t, k, slots = max(fits, key=lambda f: f[1])
                    t.add(r, k, slots)
                else:
                    mine.append(_Tree.of(r, self.causal))
            trees.extend(mine)
        return trees

    def _packed(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        trees = self._trees(rows)
        width = max(t.size for t in trees)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        bins: list[list[_Tree]] = []
        free: list[int] = []
        for t in sorted(trees, key=lambda t: -t.size):  # first-fit decreasing
            j = next((j for j, f in enumerate(free) if f >= t.size), None)
            if j is None:
                bins.append([])
                free.append(width)
                j = len(bins) - 1
            bins[j].append(t)
            free[j] -= t.size
        m = len(bins)
        ids = torch.full((m, width), self.pad, dtype=torch.long)
        pos = torch.zeros((m, width), dtype=torch.long)
        labels = torch.full((m, width), float(IGNORE), dtype=torch.float32)
        weights = torch.zeros((m, width), dtype=torch.float32)
        allowed = torch.zeros((m, width, width), dtype=torch.bool)
        used = torch.zeros((m, width), dtype=torch.bool)
        for i, b in enumerate(bins):
            at = 0
            for t in b:
                sl = slice(at, at + t.size)
                ids[i, sl] = torch.as_tensor(t.ids)
                pos[i, sl] = torch.as_tensor(t.pos)
                labels[i, sl] = torch.as_tensor(t.labels, dtype=torch.float32)
                weights[i, sl] = torch.as_tensor(t.weights, dtype=torch.float32)
                allowed[i, sl, sl] = t.mask()
                used[i, sl] = True
                at += t.size
        # padding attends to itself only (no empty softmax row); its outputs carry no label
        allowed |= torch.eye(width, dtype=torch.bool)[None] & ~used[:, :, None]
        batch = {"input_ids": ids, "position_ids": pos, "attention_mask": allowed[:, None], "labels": labels}
        if "weight" in rows[0] or self.share:
            batch["weights"] = weights
        if self.share:
            batch["label_count"] = torch.tensor(float(sum(sum(1 for v in r["labels"] if v != IGNORE) for r in rows)))
        return batch


@dataclass
class _Tree:
    """Rows laid out in one packed segment, sharing leading tokens: slot i holds ``ids[i]`` at
    position ``pos[i]``; each member row is its list of slots; ``weights`` sums the row weights
    through a slot (a labeled slot shared by two rows of weight 1 counts twice)."""

    causal: bool
    ids: list[int]
    pos: list[int]
    labels: list[float]
    weights: list[float]
    members: list[tuple[dict, list[int]]]

    @classmethod
    def of(cls, row: dict, causal: bool) -> _Tree:
        n = len(row["input_ids"])
        return cls(causal, list(row["input_ids"]), list(range(n)), [float(v) for v in row["labels"]],
                   [float(row.get("weight", 1.0))] * n, [(row, list(range(n)))])

    @property
    def size(self) -> int:
        return len(self.ids)

    def shared(self, row: dict) -> tuple[int, list[int]]:
        """The most leading tokens (with equal labels) ``row`` has in common with one member, and
        that member's slots."""
        best, best_slots = 0, []
        for other, slots in self.members:
            k = 0
            for a, b, la, lb in zip(row["input_ids"], other["input_ids"], row["labels"], other["labels"]):
                if a != b or la != lb:
                    break
                k += 1
            if k > best:
                best, best_slots = k, slots
        return best, best_slots

    def add(self, row: dict, k: int, slots: list[int]) -> None:
        """Add ``row`` sharing its first ``k`` tokens with the member whose slots are ``slots``."""
        w = float(row.get("weight", 1.0))
        mine = slots[:k]
        for s in mine:
            self.weights[s] += w
        for j in range(k, len(row["input_ids"])):
            mine.append(len(self.ids))
            self.ids.append(row["input_ids"][j])
            self.pos.append(j)
            self.labels.append(float(row["labels"][j]))
            self.weights.append(w)
        self.members.append((row, mine))

    def mask(self) -> torch.Tensor:
        """(size, size) bool: each member's tokens attend within the member (causally if causal)."""
        m = torch.zeros((self.size, self.size), dtype=torch.bool)
        for row, slots in self.members:
            s = torch.as_tensor(slots)
            n = len(slots)
            block = torch.ones((n, n), dtype=torch.bool)
            m[s[:, None], s[None, :]] |= block.tril() if self.causal else block
        return m
