"""The one tokenization of a (problem, steps) pair, used for training AND inference.

Layout (token ids)::

    [CLS or BOS]  prompt  sep  step_1  sep  step_2  sep  ...  step_n  sep
                               score_1 ^         score_2 ^           score_n ^

Every step is followed by the separator, and the step's score is read (and its label placed) at
the last token of "step + separator", as TRL's PRMTrainer does. A whitespace separator that the
tokenizer drops (WordPiece) becomes its ``[SEP]`` token (`separator_ids`). The prompt is followed by the
separator too, so the model sees where the problem ends. Pieces are tokenized separately and
concatenated, so a step's tokens never depend on its neighbours and the score positions are exact.

Truncation (``max_length``, ``max_prompt_length``, ``max_completion_length``, in tokens):

1. The prompt keeps its **head**: at most ``max_prompt_length`` tokens (default: half of
   ``max_length``), cut from the end of the problem text.
2. Steps are then added whole, in order, while the total stays within ``max_length`` and the steps'
   tokens within ``max_completion_length``. The first step that does not fit and all after it are
   removed with their labels (``n_truncated``); a label never moves to another step.
3. A row left with no step (or, for training, no labeled step) is dropped: `encode_steps` returns
   None and callers count it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100


@dataclass
class StepEncoding:
    input_ids: list[int]
    labels: list[float] = field(default_factory=list)  # IGNORE except at labeled score positions
    score_positions: list[int] = field(default_factory=list)  # one per kept step
    n_truncated: int = 0  # steps removed by truncation

    @property
    def n_steps(self) -> int:
        return len(self.score_positions)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def separator_ids(tokenizer: Any, separator: str) -> list[int]:
    """Token ids of the step separator. WordPiece tokenizers (BERT, MiniLM) drop whitespace, so a
    whitespace separator such as ``"\n"`` becomes their ``[SEP]`` token instead."""
    ids = _ids(tokenizer, separator)
    if not ids and getattr(tokenizer, "sep_token_id", None) is not None:
        ids = [tokenizer.sep_token_id]
    if not ids:
        raise ValueError(f"separator {separator!r} tokenizes to nothing and the tokenizer has no sep token")
    return ids


def prefix_ids(tokenizer: Any) -> list[int]:
    """The special token a sequence starts with: [CLS] for BERT-like encoders, else BOS if any."""
    for tid in (getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "bos_token_id", None)):
        if tid is not None:
            return [tid]
    return []


def prompt_ids(tokenizer: Any, prompt: str, *, separator: str = "\n", max_length: int | None = None, max_prompt_length: int | None = None,
               layout: str = "prm_lab") -> list[int]:
    """The tokens every solution of ``prompt`` starts with: [CLS]/BOS, the (truncated) prompt, the
    separator. Identical for all solutions of one problem, which shared-prefix scoring relies on.

    ``layout="trl"`` is TRL's PRMTrainer layout (what TRL-trained checkpoints such as
    trl-lib/Qwen2-0.5B-Reward-Math-Sheperd saw): BOS only when the tokenizer has one, no [CLS],
    and no separator after the prompt."""
    head = _ids(tokenizer, prompt)
    if max_length is not None:
        head = head[: max_prompt_length if max_prompt_length is not None else max_length // 2]
    elif max_prompt_length is not None:
        head = head[:max_prompt_length]
    if layout == "trl":
        bos = getattr(tokenizer, "bos_token_id", None)
        return ([bos] if bos is not None else []) + head
    return prefix_ids(tokenizer) + head + separator_ids(tokenizer, separator)


def encode_steps(
    tokenizer: Any,
    prompt: str,
    steps: Sequence[str],
    labels: Sequence[float | None] | None = None,
    *,
    separator: str = "\n",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    train_on_last_step_only: bool = False,
    require_label: bool = False,
    layout: str = "prm_lab",
) -> StepEncoding | None:
    """Tokenize one solution (see the module docstring). ``labels`` may hold None for unlabeled
    steps; with ``require_label`` a row whose kept steps carry no label is dropped (None)."""
    if labels is not None and len(labels) != len(steps):
        raise ValueError(f"{len(labels)} labels for {len(steps)} steps")
    sep = separator_ids(tokenizer, separator)
    input_ids = prompt_ids(tokenizer, prompt, separator=separator, max_length=max_length, max_prompt_length=max_prompt_length, layout=layout)
    out_labels = [float(IGNORE)] * len(input_ids)
    positions: list[int] = []
    used = 0
    last = len(steps) - 1
    for i, step in enumerate(steps):
        piece = _ids(tokenizer, step) + sep
        if max_length is not None and len(input_ids) + len(piece) > max_length:
            break
        if max_completion_length is not None and used + len(piece) > max_completion_length:
            break
        input_ids += piece
        used += len(piece)
        positions.append(len(input_ids) - 1)
        lab = None if labels is None else labels[i]
        if train_on_last_step_only and i != last:
            lab = None
        out_labels += [float(IGNORE)] * (len(piece) - 1) + [float(IGNORE) if lab is None else float(lab)]
    if not positions:
        return None
    if require_label and all(v == IGNORE for v in out_labels):
        return None
    return StepEncoding(input_ids, out_labels, positions, len(steps) - len(positions))


def truncate_at_steps(
    input_ids: list[int],
    positions: list[int],
    labels: Sequence[float | None] | None,
    *,
    n_steps: int,
    max_length: int | None = None,
    train_on_last_step_only: bool = False,
    require_label: bool = False,
) -> StepEncoding | None:
    """A `StepEncoding` for a sequence laid out by a published PRM's own recipe (chat template, tag
    text) with the score position of each step known. Truncation keeps the longest run of whole
    leading steps whose score position fits in ``max_length`` and cuts the tokens right after the
    last kept score position: for a causal model the kept scores are exactly those of the full
    sequence, and each label stays on its own step."""
    if labels is not None and len(labels) != n_steps:
        raise ValueError(f"{len(labels)} labels for {n_steps} steps")
    if len(positions) != n_steps:
        raise ValueError(f"found {len(positions)} score positions for {n_steps} steps")
    keep = n_steps
    if max_length is not None:
        keep = sum(1 for p in positions if p < max_length)
    if keep == 0:
        return None
    ids = list(input_ids[: positions[keep - 1] + 1])
    out_labels = [float(IGNORE)] * len(ids)
    for i in range(keep):
        lab = None if labels is None else labels[i]
        if train_on_last_step_only and i != n_steps - 1:
            lab = None
        if lab is not None:
            out_labels[positions[i]] = float(lab)
    if require_label and all(v == IGNORE for v in out_labels):
        return None
    return StepEncoding(ids, out_labels, list(positions[:keep]), n_steps - keep)
