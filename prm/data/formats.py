"""Converters for step-labeled formats: this project's own records, TRL stepwise, the old
ProcessRewardTrainer list-of-dicts, Math-Shepherd, ProcessBench and DreamPRM."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from prm.answers import extract_answer
from prm.data import FORMATS
from prm.data.fields import SplitMode, first_error_verdicts, flag, get, str_list, text, unit_float
from prm.io import iter_json_rows
from prm.label.labels import first_error_labels
from prm.schema import LABEL_SCHEMES, DataError, make_record, validate_record
from prm.steps import split_steps


@FORMATS.register("stepwise")
def stepwise(row: dict, index: int) -> list[dict]:
    """This project's own records (as written by ``python -m prm.data``), validated."""
    rec = validate_record(row)
    rec["id"] = rec["id"] or f"{rec['source'] or 'stepwise'}-{index}"
    return [rec]


@FORMATS.register("graded")
def graded(row: dict, index: int, *, source: str = "graded") -> list[dict]:
    """Graded solutions written by the main job (``exp/prm_exp.py``'s graded.jsonl: prompt, steps,
    answer, the labeler's step_correct) as unlabeled records: the labeler's verdicts are kept in
    ``meta`` (they are a labeler's, not human labels), so other labelers can grade the same
    solutions (``exp/label_quality.py``)."""
    prompt = text(row, "prompt")
    steps = str_list(row, "steps")
    meta: dict[str, Any] = {k: row[k] for k in ("labeler", "question_id") if isinstance(row.get(k), str)}
    verdicts = row.get("step_correct")
    if isinstance(verdicts, list) and len(verdicts) == len(steps) and all(v is None or isinstance(v, bool) for v in verdicts):
        meta["step_correct"] = verdicts
    return [make_record(prompt, steps, None, "none", answer=row.get("answer"), id=str(row.get("id") or f"{source}-{index}"), source=source, meta=meta)]


@FORMATS.register("trl")
def trl(row: dict, index: int, *, label_scheme: Literal["binary", "soft", "ternary"] | None = None, source: str = "trl") -> list[dict]:
    """TRL stepwise supervision: ``prompt``, ``completions``, ``labels`` (bool or float).

    Bool labels are binary (or soft: 1.0 and 0.0). Numeric labels need ``label_scheme`` (binary,
    soft or ternary): the scheme is never guessed from the values.
    """
    prompt = text(row, "prompt")
    steps = str_list(row, "completions")
    labels = get(row, "labels", list)
    scheme = label_scheme
    if scheme is None:
        if not all(isinstance(v, bool) for v in labels):
            raise DataError("labels", "numeric labels need an explicit label_scheme (binary or soft)")
        scheme = "binary"
    if scheme not in LABEL_SCHEMES:
        raise DataError("labels", "unknown label scheme", str(scheme))
    return [make_record(prompt, steps, labels, scheme, answer=row.get("answer"), id=str(row.get("id") or f"{source}-{index}"), source=source)]


def to_trl(rec: dict) -> dict:
    """A record in TRL's stepwise format. Trailing unlabeled steps are dropped (TRL stops at the
    first error too); an unlabeled step before a labeled one, or a ternary scheme, cannot be
    expressed in TRL and raises DataError."""
    scheme = rec["label_scheme"]
    if scheme not in ("binary", "soft"):
        raise DataError("label_scheme", "TRL stepwise format holds only binary or soft labels", scheme)
    labels = list(rec["labels"])
    while labels and labels[-1] is None:
        labels.pop()
    if not labels:
        raise DataError("labels", "no labeled step to write")
    if any(v is None for v in labels):
        raise DataError("labels", "unlabeled step before a labeled one cannot be written to TRL format")
    out = [bool(v) for v in labels] if scheme == "binary" else [float(v) for v in labels]
    return {"prompt": rec["prompt"], "completions": rec["completions"][: len(out)], "labels": out}


def _plus_minus(values: list, field: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if v not in ("+", "-"):
            raise DataError(field, "label must be '+' or '-'", f"item {i}: {v!r}")
        out.append(1.0 if v == "+" else 0.0)
    return out


@FORMATS.register("prt")
def prt(row: dict, index: int, *, source: str = "prt") -> list[dict]:
    """The old ProcessRewardTrainer format: ``input`` (problem), ``value`` (steps), ``label`` (+/-)."""
    prompt = text(row, "input")
    steps = str_list(row, "value")
    labels = _plus_minus(get(row, "label", list), "label")
    if len(labels) != len(steps):
        raise DataError("label", "labels/steps length mismatch", f"{len(labels)} labels for {len(steps)} steps")
    return [make_record(prompt, steps, labels, "binary", id=f"{source}-{index}", source=source)]


_STEP1 = re.compile(r"Step 1\s*:")


@FORMATS.register("math_shepherd")
def math_shepherd(row: dict, index: int, *, step_tag: str = "ки", source: str = "math_shepherd") -> list[dict]:
    """Math-Shepherd: ``input`` = problem then steps each ending with the step tag ``ки``;
    ``label`` = the same text with each tag replaced by ``+`` or ``-``.

    The problem is separated from the first step at its ``Step 1:`` header.
    """
    inp = text(row, "input")
    lab = text(row, "label")
    pieces = inp.split(step_tag)
    if len(pieces) < 2:
        raise DataError("input", f"no step tag '{step_tag}' in input")
    # Read the +/- standing where each tag stands in `input`, then require the rest of `label` to
    # be the same text, so that a label can never land on the wrong step.
    labels, marks, pos = [], [], 0
    for i, piece in enumerate(pieces[:-1]):
        pos += len(piece)
        mark = lab[pos : pos + 1]
        if mark not in ("+", "-"):
            raise DataError("label", "no '+'/'-' where the input has a step tag", f"step {i}")
        labels.append(1.0 if mark == "+" else 0.0)
        marks.append(mark)
        pos += 1
    if lab != "".join(p + m for p, m in zip(pieces, marks)) + pieces[-1]:
        raise DataError("label", "label text differs from input text (beyond the step tags)")
    m = _STEP1.search(pieces[0])
    if not m:
        raise DataError("input", "cannot find 'Step 1:' separating the problem from the first step")
    prompt = pieces[0][: m.start()].strip()
    steps = [pieces[0][m.start() :].strip()] + [p.strip() for p in pieces[1:-1]]
    if pieces[-1].strip():
        raise DataError("input", "text after the last step tag", pieces[-1].strip()[:60])
    meta = {k: row[k] for k in ("task",) if k in row}
    return [make_record(prompt, steps, labels, "binary", answer=extract_answer(steps[-1]), id=f"{source}-{index}", source=source, meta=meta)]


@FORMATS.register("processbench")
def processbench(row: dict, index: int, *, source: str = "processbench") -> list[dict]:
    """ProcessBench: ``problem``, ``steps``, ``label`` (index of the first wrong step, -1 if none),
    ``final_answer_correct``, ``generator``, ``id``. Labels: 1 before the first error, 0 at it,
    None after; ``label`` and the rest are kept in meta."""
    prompt = text(row, "problem")
    steps = str_list(row, "steps")
    first = get(row, "label", int)
    labels = first_error_labels(first_error_verdicts(len(steps), first))
    meta = {"label": first}
    for k in ("generator", "subset"):
        if k in row:
            meta[k] = row[k]
    if row.get("final_answer_correct") is not None:
        meta["final_answer_correct"] = flag(row, "final_answer_correct")
    return [make_record(prompt, steps, labels, "binary", answer=extract_answer(steps[-1]) if steps else None, id=str(row.get("id") or f"{source}-{index}"), source=source, meta=meta)]


def _lean_comment(s: str) -> str:
    """miniF2F's ``informal_prefix`` is a Lean doc comment ``/-- ... -/``; return its text."""
    s = s.strip()
    s = re.sub(r"^/-+-?", "", s)
    s = re.sub(r"-/$", "", s)
    return s.strip()


def _float_list(values: list, field: str) -> list[float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise DataError(field, "not a number", f"item {i}: {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(field, "not a number", f"item {i}: {v!r}")
        out.append(float(v))
    return out


@FORMATS.register("dreamprm")
def dreamprm(row: dict, index: int, *, split_mode: SplitMode = "auto", source: str = "dreamprm") -> list[dict]:
    """DreamPRM JSONL: ``cot_response`` (split into steps), ``cot_steps[i].pi`` (soft labels),
    ``meta_label`` (solution correctness), ``informal_prefix`` and ``formal_statement``.

    The prompt is the informal statement (Lean comment markers removed) followed by the formal
    statement, which is what the prover was asked; the problem may instead be in ``problem``/``prompt``.
    """
    informal = next((row[k] for k in ("informal_prefix", "problem", "prompt") if row.get(k) is not None), None)
    formal = row.get("formal_statement")
    for name, value in (("informal_prefix", informal), ("formal_statement", formal)):
        if value is not None and not isinstance(value, str):
            raise DataError(name, "expected str", f"got {type(value).__name__}")
    if not informal and not formal:
        raise DataError("informal_prefix", "missing field (also no problem/prompt/formal_statement)")
    prompt = "\n\n".join(x for x in (_lean_comment(informal) if informal else None, formal.strip() if formal else None) if x)
    steps = split_steps(text(row, "cot_response"), split_mode)
    cot = get(row, "cot_steps", list)
    pis = []
    for i, st in enumerate(cot):
        if not isinstance(st, dict) or "pi" not in st:
            raise DataError("cot_steps", "item has no 'pi'", f"item {i}")
        pis.append(st["pi"])
    labels = _float_list(pis, "cot_steps.pi")
    if len(labels) != len(steps):
        raise DataError("cot_steps", "labels/steps length mismatch", f"{len(labels)} pi values for {len(steps)} steps of cot_response")
    meta: dict[str, Any] = {}
    if row.get("meta_label") is not None:
        meta["meta_label"] = unit_float(row["meta_label"], "meta_label")
    for k in ("formal_statement", "name", "domain"):
        if row.get(k) is not None:
            meta[k] = row[k]
    return [make_record(prompt, steps, labels, "soft", id=str(row.get("id") or row.get("name") or f"{source}-{index}"), source=source, meta=meta)]


def dreamprm_math_steps(solution: str) -> list[str]:
    """Steps of a DreamPRM math solution: paragraphs, with a closing "The final answer is ..."
    paragraph folded into the step before it (that is how the released step labels count)."""
    steps = split_steps(solution, "paragraphs")
    if len(steps) > 1 and steps[-1].lower().startswith("the final answer"):
        steps = steps[:-2] + [steps[-2] + "\n\n" + steps[-1]]
    return steps


@lru_cache(maxsize=4)
def _prompt_index(path: str) -> dict[str, str]:
    index = {}
    for _, r in iter_json_rows(path):
        sol = r.get("full_solution") or r.get("generated_solution")
        prob = r.get("prompt") or r.get("problem")
        if isinstance(sol, str) and isinstance(prob, str):
            index[sol] = prob
    return index


@FORMATS.register("dreamprm_math")
def dreamprm_math(row: dict, index: int, *, prompts: str | None = None, source: str = "dreamprm_math") -> list[dict]:
    """The DreamPRM math files: ``prompt`` + ``full_solution`` + ``accuracy`` + ``domain`` (train),
    and ``full_solution`` + ``step_labels`` (meta; it has no problem text, so pass
    ``prompts=FILE``, a train or OpenMathInstruct-2 file whose rows hold the same solutions).

    Step labels, when present, are soft; ``accuracy`` becomes ``meta_label`` in meta.
    """
    solution = text(row, "full_solution")
    prompt = row.get("prompt") or row.get("problem")
    if prompt and not isinstance(prompt, str):
        raise DataError("prompt", "expected str", f"got {type(prompt).__name__}")
    if not prompt:
        if not prompts:
            raise DataError("prompt", "missing field; pass prompts=FILE to look problems up by solution text")
        prompt = _prompt_index(str(Path(prompts))).get(solution)
        if not prompt:
            raise DataError("full_solution", "solution not found in the prompts file", str(prompts))
    steps = dreamprm_math_steps(solution)
    meta: dict[str, Any] = {}
    if "accuracy" in row:
        meta["meta_label"] = unit_float(row["accuracy"], "accuracy")
    if "domain" in row:
        meta["domain"] = row["domain"]
    if row.get("step_labels") is not None:
        labels = _float_list(get(row, "step_labels", list), "step_labels")
        if len(labels) != len(steps):
            raise DataError("step_labels", "labels/steps length mismatch", f"{len(labels)} labels for {len(steps)} steps")
        scheme = "soft"
    else:
        labels, scheme = None, "none"
    return [make_record(prompt, steps, labels, scheme, answer=extract_answer(solution), id=f"{source}-{index}", source=source, meta=meta)]
