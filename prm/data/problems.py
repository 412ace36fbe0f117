"""Problem sets without step labels (for generation), and CHAMP.

Each gives records with ``label_scheme="none"``: the problem, its gold answer, and the reference
solution's steps when the set has one (empty ``completions`` otherwise).
CHAMP's first-wrong-step annotations (``champ_fws``) are the exception: real step labels.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prm.answers import extract_answer
from prm.data import FORMATS, PACKAGED_SOURCES
from prm.data.fields import SplitMode, answer_text, first_error_verdicts, flag, get, text
from prm.label.labels import first_error_labels
from prm.schema import DataError, make_record
from prm.steps import split_steps, step_spans

_CALC = re.compile(r"<<[^<>]*>>")


@FORMATS.register("gsm8k")
def gsm8k(row: dict, index: int, *, strip_calculator: bool = False, source: str = "gsm8k") -> list[dict]:
    """GSM8K: ``question``, ``answer`` = reference lines (with ``<<a*b=c>>`` calculator
    annotations) and ``#### N``. Steps are the lines before ``####``; annotations are kept unless
    ``strip_calculator`` (the rules verifier reads them)."""
    question = text(row, "question")
    ans = text(row, "answer")
    if "####" not in ans:
        raise DataError("answer", "no '#### N' final answer")
    body, final = ans.rsplit("####", 1)
    steps = split_steps(body, "lines")
    if strip_calculator:
        steps = [_CALC.sub("", s) for s in steps]
    final = final.strip().replace(",", "")
    if not final:
        raise DataError("answer", "empty final answer after '####'")
    return [make_record(question, steps, None, "none", answer=final, id=f"{source}-{index}", source=source)]


@FORMATS.register("math")
def math(row: dict, index: int, *, split_mode: SplitMode = "auto", source: str = "math") -> list[dict]:
    """MATH / MATH500: ``problem``, ``solution`` (reference, with a boxed answer), optional
    ``answer`` (MATH500). Steps: the solution split by ``split_mode``."""
    problem = text(row, "problem")
    solution = text(row, "solution")
    answer = answer_text(row, "answer")  # 0 is an answer: only a missing one falls back to the boxed one
    if answer is None:
        answer = extract_answer(solution)
    if answer is None:
        raise DataError("solution", "no \\boxed{} answer and no 'answer' field")
    meta = {k: row[k] for k in ("level", "type", "subject", "unique_id") if k in row}
    rid = row.get("unique_id") or f"{source}-{row.get('idx', index)}"
    return [make_record(problem, split_steps(solution, split_mode), None, "none", answer=str(answer), id=str(rid), source=source, meta=meta)]


def _lean_doc(s: str) -> str:
    return re.sub(r"-/\s*$", "", re.sub(r"^\s*/-+", "", s)).strip()


@FORMATS.register("minif2f")
def minif2f(row: dict, index: int, *, source: str = "minif2f") -> list[dict]:
    """miniF2F, Lean 4 (``name``, ``informal_prefix``, ``formal_statement``, ``split``) or informal
    (``problem_name``, ``informal_statement``, ``informal_proof``). The informal proof, when
    present, gives reference steps (paragraphs)."""
    if "informal_prefix" in row or "formal_statement" in row:
        prompt = _lean_doc(text(row, "informal_prefix"))
        steps: list[str] = []
        name = row.get("name")
    else:
        prompt = text(row, "informal_statement")
        proof = get(row, "informal_proof", str, default="")
        steps = split_steps(proof, "paragraphs") if proof.strip() else []
        name = row.get("problem_name")
    m = re.search(r"Show that it is\s*(.+?)\.?\s*$", prompt)
    meta = {k: row[k] for k in ("formal_statement", "split", "header", "goal") if row.get(k) is not None}
    return [make_record(prompt, steps, None, "none", answer=m.group(1).strip() if m else None, id=str(name or f"{source}-{index}"), source=source, meta=meta)]


@FORMATS.register("openmathinstruct")
def openmathinstruct(row: dict, index: int, *, only_correct: bool = False, split_mode: SplitMode = "paragraphs",
                     source: str = "openmathinstruct") -> list[dict]:
    """OpenMathInstruct-1/2: ``problem`` (or ``question``), ``generated_solution``,
    ``expected_answer``, ``is_correct`` when present (v1); ``only_correct`` keeps the rows marked
    correct and rejects rows without the field."""
    problem = row.get("problem") or row.get("question")
    if not isinstance(problem, str) or not problem.strip():
        raise DataError("problem", "missing field or not text")
    solution = text(row, "generated_solution")
    meta: dict[str, Any] = {k: row[k] for k in ("problem_source", "dataset", "error_message") if k in row}
    correct = flag(row, "is_correct")  # "false" is false, never a truthy string
    if correct is not None:
        meta["is_correct"] = correct
    if only_correct:
        if correct is None:
            raise DataError("is_correct", "missing field (needed by only_correct)")
        if not correct:
            return []
    answer = answer_text(row, "expected_answer")
    return [make_record(problem, split_steps(solution, split_mode), None, "none", answer=answer, id=f"{source}-{index}", source=source, meta=meta)]


def champ_file() -> Path:
    """The JSON file that the ``champ-dataset`` package ships."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("CHAMP needs the 'champ-dataset' package: pip install champ-dataset")
    return Path(spec.origin).parent / "dataset_files" / "v0.json"


def _champ_rows() -> Iterator[tuple[str, Any]]:
    path = champ_file()
    data = json.loads(path.read_text(encoding="utf-8"))
    for pid, p in data["problems"].items():
        yield f"{path}:problems.{pid}", p


for _name in ("champ", "champ_fws"):
    PACKAGED_SOURCES[_name] = _champ_rows


def _champ_prompt(row: dict) -> tuple[str, str | None]:
    raw = text(row, "_raw_text")
    ans = get(row, "_raw_answer", str, default=None)
    return raw.replace("@@", ""), ans.replace("@@", "") if isinstance(ans, str) else None


@FORMATS.register("champ")
def champ(row: dict, index: int, *, source: str = "champ") -> list[dict]:
    """CHAMP problems (``champ-dataset``) with their reference solution steps."""
    prompt, answer = _champ_prompt(row)
    steps = []
    for i, s in enumerate(get(row, "solution.steps", list)):
        raw = s.get("_raw_text") if isinstance(s, dict) else None
        if not isinstance(raw, str):
            raise DataError(f"solution.steps[{i}]._raw_text", "missing field")
        if raw.strip():
            steps.append(raw.replace("@@", ""))
    meta = {"category": row.get("category")}
    return [make_record(prompt, steps, None, "none", answer=answer, id=str(row.get("identifier") or index), source=source, meta=meta)]


@FORMATS.register("champ_fws")
def champ_fws(row: dict, index: int, *, source: str = "champ_fws") -> list[dict]:
    """CHAMP's first-wrong-step annotations on model solutions, as ProcessBench-style records.

    Each annotated solution is split into paragraphs; the step holding the annotated wrong span's
    start is the first error (``label`` in meta; -1 when the annotator marked no mistake).
    """
    prompt, answer = _champ_prompt(row)
    anns = get(row, "fws_annotations", dict, default={})
    out = []
    for key, ann in sorted(anns.items()):
        where = f"fws_annotations.{key}"
        sol = ann.get("text") if isinstance(ann, dict) else None
        if not isinstance(sol, str) or not sol.strip():
            raise DataError(f"{where}.text", "missing field")
        spans = step_spans(sol, "paragraphs")
        start = ann.get("start_idx")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            raise DataError(f"{where}.start_idx", "expected int or null", repr(start)[:40])
        if start is None:
            first = -1
        else:
            # The first paragraph that ends after the wrong span starts holds the error.
            first = next((i for i, (_, end, _) in enumerate(spans) if start < end), None)
            if first is None:
                raise DataError(f"{where}.start_idx", "span starts after the end of the text", str(start))
        steps = [s for _, _, s in spans]
        meta = {"label": first, "generator": ann.get("author"), "setting": key, "category": row.get("category")}
        out.append(make_record(prompt, steps, first_error_labels(first_error_verdicts(len(steps), first)), "binary", answer=answer, id=f"{row.get('identifier', index)}|{key}", source=source, meta=meta))
    return out
