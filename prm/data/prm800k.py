"""PRM800K (openai/prm800k) rows -> stepwise records.

A row is one labeler's pass over one problem: ``question.problem``,
``question.ground_truth_answer``, and ``label.steps[]``, each with ``completions[]`` (text and a
rating in {-1, 0, +1}), an optional ``human_completion`` and ``chosen_completion`` (the index the
labeler continued with), and ``label.finish_reason``.

The labeled path of a row:

- phase 1 (no ``question.pre_generated_steps``): at each step the chosen completion, else the
  human-written one (rated positive), else — where the labeler stopped because every completion
  was wrong (``found_error``) — the first completion rated -1, which ends the path.
- phase 2 (``pre_generated_steps`` present): the pre-generated solution, step i rated by
  ``label.steps[i].completions[0]``; steps after the first -1, and steps nobody rated, are
  unlabeled (None).

``paths="all"`` (default) adds, as in TRL's PRM800K preparation, one record per rated alternative
(non-chosen) completion: the labeled path up to that step, then the alternative, which ends the
record. Most negative steps of phase 1 are alternatives, so ``paths="chosen"`` (one record per
row) sees few of them.

Labels (``label_scheme``): ``ternary`` keeps all three ratings as class ids (-1 -> 0, 0 -> 1,
+1 -> 2); ``binary`` maps +1 -> 1, -1 -> 0 and the neutral 0 by ``neutral``: ``negative``
(default, TRL's choice: only +1 is a good step), ``positive``, or ``ignore`` (None: no label).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from prm.data import FORMATS
from prm.data.fields import get, text
from prm.schema import TERNARY_FROM_RATING, DataError, make_record

NEUTRAL_MODES = ("negative", "positive", "ignore")
PATH_MODES = ("chosen", "all")


def _rating(c: Any, where: str, human: bool = False) -> int | None:
    """A completion's rating; None for a completion nobody rated (the labeler gave up)."""
    if not isinstance(c, dict):
        raise DataError(where, "completion is not an object")
    r = c.get("rating")
    if r is None:
        return 1 if human else None  # a human-written step is a correct step
    if r not in (-1, 0, 1) or isinstance(r, bool):
        raise DataError(f"{where}.rating", "rating out of range", f"{r!r} not in {{-1, 0, 1}}")
    return r


def _text(c: Any, where: str) -> str:
    if not isinstance(c, dict):
        raise DataError(where, "completion is not an object")
    t = c.get("text")
    if not isinstance(t, str) or not t.strip():
        raise DataError(f"{where}.text", "empty step")
    return t


@FORMATS.register("prm800k")
def prm800k(
    row: dict,
    index: int,
    *,
    label_scheme: Literal["ternary", "binary"] = "ternary",
    neutral: Literal["negative", "positive", "ignore"] = "negative",
    paths: Literal["chosen", "all"] = "all",
    source: str = "prm800k",
) -> list[dict]:
    if label_scheme not in ("ternary", "binary"):
        raise DataError(None, "label_scheme must be 'ternary' or 'binary'", label_scheme)
    if neutral not in NEUTRAL_MODES:
        raise DataError(None, f"neutral must be one of {', '.join(NEUTRAL_MODES)}", neutral)
    if paths not in PATH_MODES:
        raise DataError(None, f"paths must be one of {', '.join(PATH_MODES)}", paths)

    def label(r: int) -> float | None:
        if label_scheme == "ternary":
            return float(TERNARY_FROM_RATING[r])
        if r == 0:
            return {"negative": 0.0, "positive": 1.0, "ignore": None}[neutral]
        return 1.0 if r == 1 else 0.0

    prompt = text(row, "question.problem")
    answer = get(row, "question.ground_truth_answer", (str, int, float), default=None)
    steps = get(row, "label.steps", list)
    pre = get(row, "question.pre_generated_steps", list, default=None)
    phase = 2 if pre is not None else 1
    base_id = f"{source}-p{phase}-{index}"
    meta = {
        "phase": phase,
        "finish_reason": get(row, "label.finish_reason", str, default=None),
        "labeler": row.get("labeler"),
        "generation": row.get("generation"),
        "is_quality_control_question": row.get("is_quality_control_question"),
    }

    path_steps: list[str] = []
    path_ratings: list[int | None] = []
    branches: list[tuple[int, str, int]] = []  # (step index, alternative text, rating)
    for i, st in enumerate(steps):
        where = f"label.steps[{i}]"
        if not isinstance(st, dict):
            raise DataError(where, "step is not an object")
        comps = st.get("completions") or []
        if not isinstance(comps, list):
            raise DataError(f"{where}.completions", "expected a list")
        chosen = st.get("chosen_completion")
        human = st.get("human_completion")
        ratings = [_rating(c, f"{where}.completions[{j}]") for j, c in enumerate(comps)]
        if phase == 2:
            main = 0 if comps else None
        elif chosen is not None:
            if not isinstance(chosen, int) or isinstance(chosen, bool) or not 0 <= chosen < len(comps):
                raise DataError(f"{where}.chosen_completion", "index out of range", repr(chosen))
            main = chosen
        else:
            main = None
        for j, c in enumerate(comps):
            if j != main and ratings[j] is not None:
                branches.append((i, _text(c, f"{where}.completions[{j}]"), ratings[j]))
        if main is not None:
            path_steps.append(_text(comps[main], f"{where}.completions[{main}]"))
            path_ratings.append(ratings[main])
            if phase == 2 and ratings[main] == -1:
                break
        elif human is not None:
            path_steps.append(_text(human, f"{where}.human_completion"))
            path_ratings.append(_rating(human, f"{where}.human_completion", human=True))
        else:
            # The labeler stopped here: every completion was wrong (or they gave up).
            wrong = [j for j, r in enumerate(ratings) if r == -1]
            if wrong:
                path_steps.append(_text(comps[wrong[0]], f"{where}.completions[{wrong[0]}]"))
                path_ratings.append(-1)
                branches = [b for b in branches if not (b[0] == i and b[1] == path_steps[-1])]
            break

    if phase == 2:
        # The pre-generated solution is the path; rated steps as read, the rest unlabeled.
        full = [s for s in pre if isinstance(s, str)]
        if len(full) != len(pre) or any(not s.strip() for s in full):
            raise DataError("question.pre_generated_steps", "expected non-empty strings")
        if full[: len(path_steps)] != path_steps:
            raise DataError("label.steps", "rated steps differ from question.pre_generated_steps")
        path_ratings += [None] * (len(full) - len(path_ratings))
        path_steps = full
    if not path_steps:
        raise DataError("label.steps", "no labeled step")

    labels = [None if r is None else label(r) for r in path_ratings]
    if all(v is None for v in labels):
        raise DataError("label.steps", "no rated step")
    records = [make_record(prompt, path_steps, labels, label_scheme, answer=answer, id=base_id, source=source, meta=meta)]
    if paths == "all":
        for k, (i, alt, r) in enumerate(branches):
            if i > len(path_ratings) or any(x is None for x in path_ratings[:i]):
                continue  # no fully labeled prefix to hang this alternative on
            records.append(
                make_record(
                    prompt,
                    path_steps[:i] + [alt],
                    labels[:i] + [label(r)],
                    label_scheme,
                    answer=answer,
                    id=f"{base_id}-alt{k}",
                    source=source,
                    meta={**meta, "alternative_at": i},
                )
            )
    return records


# --- the raw release's files -------------------------------------------------------------------

PRM800K_HUB = "tasksource/PRM800K"  # the raw release's four JSONL files (phase{1,2}_{train,test}.jsonl)


def load_prm800k(split: str | None = None, streaming: bool = False, source: str | None = None,
                 phases: Sequence[int] = (1, 2), **options: Any) -> dict[str, Any]:
    """PRM800K as stepwise records (converter `prm800k`; ``options`` such as ``label_scheme``,
    ``neutral``, ``paths`` go to it), as ``{split: Dataset}`` for ``split`` in (train, test) or both.

    ``source``: a Hugging Face dataset repo holding the raw release's files
    ``phase{1,2}_{train,test}.jsonl`` (default `PRM800K_HUB`; openai/prm800k's own Git LFS files have
    the same names), or a local folder with those files, or one local file (any split name maps to it).
    """
    import datasets

    from prm.data import convert_rows, load
    from prm.schema import FEATURES, to_dataset

    source = source or PRM800K_HUB
    splits = [split] if split else ["train", "test"]
    out: dict[str, Any] = {}
    local = Path(source)
    for sp in splits:
        if local.is_file():
            files = [local]
        else:
            names = [f"phase{p}_{sp}.jsonl" for p in phases]
            files = [local / n for n in names] if local.is_dir() else [f"hf://datasets/{source}/{n}" for n in names]
        if local.exists():
            missing = [str(f) for f in files if not Path(f).is_file()]
            if missing:
                raise FileNotFoundError(f"PRM800K files not found: {', '.join(missing)}")
            parts = [load("prm800k", f, streaming=streaming, **options) for f in files]
            out[sp] = parts[0] if len(parts) == 1 else (datasets.interleave_datasets(parts, stopping_strategy="all_exhausted") if streaming else datasets.concatenate_datasets(parts))
            continue

        def rows(files: list = files) -> Any:
            # One file at a time: phase 1 and phase 2 rows differ in fields, so no shared Arrow schema.
            for f in files:
                hub = datasets.load_dataset("json", data_files=f, split="train", streaming=True)
                yield from ((f"{f} row {i}", r) for i, r in enumerate(hub))

        if streaming:
            out[sp] = datasets.IterableDataset.from_generator(lambda rows=rows: convert_rows("prm800k", rows(), **options), features=FEATURES)
        else:
            out[sp] = to_dataset(convert_rows("prm800k", rows(), **options))
    return out

