"""An offline DreamPRM train/meta/held-out triple for miniF2F, in DreamPRM's JSONL format.

The released DreamPRM math files hold real solutions with domains, accuracies and step labels, but
every step label is 1.0 and 97% of the accuracies are 1.0, so a PRM trained on them alone has
nothing to separate. miniF2F holds statements (Lean 4 + informal) and human informal proofs, but no
wrong proofs. The recipe (`build_minif2f_pair`) makes both usable, with errors at known steps:

- **train** (``train.jsonl``): every DreamPRM math solution (``train_math.json`` joined on
  ``full_solution`` with the step labels of ``meta_math.json``), steps as the DreamPRM step labels
  count them (`prm.data.formats.dreamprm_math_steps`), ``pi`` = the released step label,
  ``meta_label`` = ``accuracy``, ``domain`` kept; plus a copy of each solution with one number in
  one step changed to a wrong value (`prm.data.inject._wrong_value`): ``pi`` = 1 before that step,
  0 from it on (a wrong prefix cannot reach a correct solution), ``meta_label`` = 0.
- **meta** (``meta.jsonl``, miniF2F ``valid`` split) and **held-out** (``heldout.jsonl``, ``test``
  split): each problem's informal statement and Lean 4 statement (joined on the problem name) with
  its human informal proof split into steps (paragraphs, then sentences), ``meta_label`` = 1, plus a
  copy with one number changed in one step, ``meta_label`` = 0 (``pi`` as above).
- optional controlled noise (``noisy_domains``): the ``pi`` of every train row of those domains is
  replaced by a fair coin flip, a check that reweighting finds and down-weights them.
- optional fitting (``fit``, a `ProofBudget`): meta and held-out rows are judged whole (their
  ``meta_label`` speaks of the whole proof), so a proof whose steps exceed the PRM's context would be
  dropped. With a budget, the steps of such a proof are shortened *before* the error is injected:
  every step keeps its place, its label and its head and tail words; the longest steps lose middle
  words (replaced by ``...``) down to a common cap, the largest one under which the proof fits
  (`fit_steps`). Right and corrupted copies are cut from the same shortened proof, so the changed
  number is always in the kept text. Train rows are not shortened (training truncates whole
  trailing steps).

Every choice is drawn from a generator seeded by ``seed`` and the row's key, so a rebuild writes
the same bytes. A changed number almost always breaks a proof or a computation, but not always (a
number in a remark); those rows are label noise of the recipe, not of the data.

    python -m prm.data.dreamprm_build --out data/dreamprm_minif2f    # reads $PRM_DATA_DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prm.data.formats import _lean_comment, dreamprm_math_steps
from prm.data.inject import _wrong_value
from prm.io import data_dir, iter_json_rows, write_jsonl
from prm.schema import DataError

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\d.])")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


def proof_steps(proof: str, max_steps: int = 12) -> list[str]:
    """Steps of an informal proof: paragraphs, each split into sentences (a sentence ends at
    ``.``/``!``/``?`` followed by a capital letter). Steps beyond ``max_steps`` are merged into the
    last one, so long proofs keep their end (where the claimed answer usually is)."""
    steps = [s.strip() for p in _PARAGRAPH.split(proof) for s in _SENTENCE.split(p.strip()) if s.strip()]
    if len(steps) > max_steps:
        steps = steps[: max_steps - 1] + [" ".join(steps[max_steps - 1 :])]
    return steps


@dataclass
class ProofBudget:
    """At most ``tokens`` step tokens per meta/held-out proof, as counted by ``count`` (a step's
    tokens including its separator, e.g. with the PRM's tokenizer); ``tokenizer`` names it."""

    tokens: int
    count: Callable[[str], int]
    tokenizer: str = ""

    def recipe(self) -> dict:
        return {"tokens": self.tokens, "tokenizer": self.tokenizer}


ELLIPSIS = "..."


def clip_middle(step: str, cap: int, count: Callable[[str], int]) -> str:
    """``step`` with middle words replaced by ``...`` so that ``count`` is at most ``cap``: the
    most words that fit, half from the head, half from the tail."""
    if count(step) <= cap:
        return step
    words = step.split()
    lo, hi = 0, len(words) - 1  # words kept; len(words) itself does not fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        head = (mid + 1) // 2
        if count(" ".join(words[:head] + [ELLIPSIS] + words[len(words) - (mid - head):])) <= cap:
            lo = mid
        else:
            hi = mid - 1
    head = (lo + 1) // 2
    return " ".join(words[:head] + [ELLIPSIS] + words[len(words) - (lo - head):])


def fit_steps(steps: list[str], budget: ProofBudget) -> tuple[list[str], int] | None:
    """Steps whose token counts (as written by `cot_response`, with their ``### Step k:`` header,
    which the PRM reads too) sum to at most ``budget.tokens``: every step longer than a common cap
    (the largest cap that makes the proof fit) is shortened by `clip_middle`. Returns (steps,
    number of shortened steps), or None when even the shortest form of each step does not fit."""
    counts = [lambda t, k=k: budget.count(step_text(k, t)) for k in range(1, len(steps) + 1)]
    lengths = [c(s) for c, s in zip(counts, steps)]
    if sum(lengths) <= budget.tokens:
        return steps, 0
    floor = [c(ELLIPSIS) if len(s.split()) > 1 else n for c, s, n in zip(counts, steps, lengths)]
    if sum(floor) > budget.tokens:
        return None
    lo, hi = 1, max(lengths)  # the cap: the largest one whose capped lengths fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, max(mid, f)) for n, f in zip(lengths, floor)) <= budget.tokens:
            lo = mid
        else:
            hi = mid - 1
    out = [clip_middle(s, max(lo, f), c) if n > max(lo, f) else s for c, s, n, f in zip(counts, steps, lengths, floor)]
    return out, sum(a != b for a, b in zip(out, steps))


def corrupt_number(steps: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    """Change one number in one step to a plausible wrong value; returns (steps, index) or None
    when no step has a number that can be changed."""
    sites = [(i, m) for i, s in enumerate(steps) for m in _NUMBER.finditer(s)]
    rng.shuffle(sites)
    for i, m in sites:
        wrong = _wrong_value(m.group(0), rng)
        if wrong is None:
            continue
        s = steps[i]
        return steps[:i] + [s[: m.start()] + wrong + s[m.end() :]] + steps[i + 1 :], i
    return None


def step_text(k: int, step: str) -> str:
    """Step ``k`` (from 1) in DreamPRM's layout; `prm.steps.split_steps` (headers) keeps the header."""
    return f"### Step {k}: {step}"


def cot_response(steps: list[str]) -> str:
    """DreamPRM's ``### Step k:`` layout; read back with ``split_mode=headers``."""
    return "\n".join(step_text(k, s) for k, s in enumerate(steps, 1))


def _row(rid: str, prompt: str, formal: str | None, steps: list[str], pis: list[float], meta_label: float, domain: str, **extra) -> dict:
    row = {"id": rid, "informal_prefix": prompt, "cot_response": cot_response(steps), "cot_steps": [{"pi": float(p)} for p in pis],
           "meta_label": float(meta_label), "domain": domain}
    if formal:
        row["formal_statement"] = formal
    row.update(extra)
    return row


def _with_error(rid: str, prompt: str, formal: str | None, steps: list[str], domain: str, rng: random.Random) -> dict | None:
    hit = corrupt_number(steps, rng)
    if hit is None:
        return None
    bad, k = hit
    return _row(rid + "-err", prompt, formal, bad, [1.0] * k + [0.0] * (len(bad) - k), 0.0, domain, injected_at=k)


def train_rows(src: Path, seed: int = 0, noisy_domains: Iterable[str] = ()) -> list[dict]:
    """Train rows from the DreamPRM math files in ``src`` (see the module docstring)."""
    labels = {}
    for where, r in iter_json_rows(src / "meta_math.json"):
        if not isinstance(r.get("full_solution"), str) or not isinstance(r.get("step_labels"), list):
            raise DataError("full_solution", "expected full_solution (str) and step_labels (list)", where=where)
        labels[r["full_solution"]] = r["step_labels"]
    noisy = set(noisy_domains)
    out, skipped = [], 0
    for where, r in iter_json_rows(src / "train_math.json"):
        for f in ("prompt", "full_solution", "domain"):
            if not isinstance(r.get(f), str):
                raise DataError(f, "missing or not a string", where=where)
        steps = dreamprm_math_steps(r["full_solution"])
        pis = labels.get(r["full_solution"])
        if pis is None or len(pis) != len(steps):
            skipped += 1  # the released labels count steps differently for a few solutions
            continue
        rid = f"dreamprm-math-{len(out)}"
        rng = random.Random(f"{seed}-{rid}")
        rows = [_row(rid, r["prompt"], None, steps, pis, float(r.get("accuracy", 1.0)), r["domain"])]
        err = _with_error(rid, r["prompt"], None, steps, r["domain"], rng)
        rows += [err] if err else []
        if r["domain"] in noisy:
            for row in rows:
                row["cot_steps"] = [{"pi": float(rng.random() < 0.5)} for _ in row["cot_steps"]]
                row["noisy"] = True
        out += rows
    if skipped:
        log.warning("%s: %d solutions skipped (step labels do not match their steps)", src / "train_math.json", skipped)
    return out


def minif2f_rows(src: Path, split: str, seed: int = 0, fit: ProofBudget | None = None) -> list[dict]:
    """Meta/held-out rows from miniF2F (``minif2f_lean4.jsonl`` + ``minif2f_informal.jsonl``); with
    ``fit``, over-long proofs are shortened first (`fit_steps`) and their rows carry ``shortened_steps``."""
    formal = {}
    for where, r in iter_json_rows(src / "minif2f_lean4.jsonl"):
        formal[r.get("name")] = r
    out = []
    for where, r in iter_json_rows(src / "minif2f_informal.jsonl"):
        if r.get("split") != split:
            continue
        name, proof = r.get("problem_name"), r.get("informal_proof")
        if not isinstance(name, str) or not isinstance(proof, str):
            raise DataError("informal_proof", "missing problem_name or informal_proof", where=where)
        steps = proof_steps(proof)
        if not steps:
            continue
        extra = {}
        if fit is not None:
            fitted = fit_steps(steps, fit)
            if fitted is None:  # more steps than the budget has tokens: left whole (the encoder drops it, counted)
                log.warning("%s: %d steps do not fit %d tokens even shortened", name, len(steps), fit.tokens)
            elif fitted[1]:
                steps, extra = fitted[0], {"shortened_steps": fitted[1]}
        lean = formal.get(name, {})
        prompt = _lean_comment(lean["informal_prefix"]) if lean.get("informal_prefix") else r.get("informal_statement", "")
        rng = random.Random(f"{seed}-{name}")
        out.append(_row(f"minif2f-{name}", prompt, lean.get("formal_statement"), steps, [1.0] * len(steps), 1.0, "minif2f", **extra))
        err = _with_error(f"minif2f-{name}", prompt, lean.get("formal_statement"), steps, "minif2f", rng)
        if err:
            out.append(err | extra)
    return out


def recipe(seed: int = 0, noisy_domains: Iterable[str] = (), fit: ProofBudget | None = None) -> dict:
    """The build settings a data folder was made with (``counts.json``'s ``recipe``): a folder made
    with other settings is stale."""
    return {"seed": seed, "noisy_domains": sorted(noisy_domains), "fit": fit.recipe() if fit else None}


def is_current(out_dir: str | Path, wanted: dict) -> bool:
    """The three files are in ``out_dir`` and were built with the ``wanted`` `recipe`."""
    out = Path(out_dir)
    if not all((out / f"{n}.jsonl").is_file() for n in ("train", "meta", "heldout")) or not (out / "counts.json").is_file():
        return False
    try:
        return json.loads((out / "counts.json").read_text(encoding="utf-8")).get("recipe") == wanted
    except (json.JSONDecodeError, OSError):
        return False


def build_minif2f_pair(out_dir: str | Path, source: str | Path | None = None, seed: int = 0, noisy_domains: Iterable[str] = (),
                       fit: ProofBudget | None = None) -> dict:
    """Write ``train.jsonl``, ``meta.jsonl`` (miniF2F valid) and ``heldout.jsonl`` (miniF2F test)
    under ``out_dir`` from ``source`` (default: `prm.io.data_dir`); ``fit`` shortens over-long
    meta/held-out proofs (see the module docstring). Returns row counts and the `recipe`."""
    root = Path(source) if source else data_dir()
    if root is None or not (root / "dreamprm").is_dir() or not (root / "minif2f").is_dir():
        raise FileNotFoundError(f"need dreamprm/ and minif2f/ under the data folder ({root}); set PRM_DATA_DIR")
    out = Path(out_dir)
    noisy_domains = list(noisy_domains)
    parts = {"train": train_rows(root / "dreamprm", seed, noisy_domains), "meta": minif2f_rows(root / "minif2f", "valid", seed, fit),
             "heldout": minif2f_rows(root / "minif2f", "test", seed, fit)}
    counts: dict = {"recipe": recipe(seed, noisy_domains, fit)}
    for name, rows in parts.items():
        write_jsonl(out / f"{name}.jsonl", rows)
        counts[name] = {"rows": len(rows), "meta_label_1": sum(r["meta_label"] == 1.0 for r in rows),
                        "domains": dict(sorted(Counter(r["domain"] for r in rows).items())),
                        "shortened": sum("shortened_steps" in r for r in rows)}
    (out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--source", default=None, help="data folder with dreamprm/ and minif2f/ (default: $PRM_DATA_DIR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noisy_domains", default="", help="comma-separated train domains whose step labels become coin flips")
    ap.add_argument("--max_proof_tokens", type=int, default=None, help="shorten meta/held-out proofs to this many step tokens")
    ap.add_argument("--tokenizer", default="minilm", help="tokenizer that counts them: embedded name, path or hub id")
    a = ap.parse_args(argv)
    fit = None
    if a.max_proof_tokens:
        from transformers import AutoTokenizer

        from prm.models.backbones import resolve

        tok = AutoTokenizer.from_pretrained(resolve(a.tokenizer))
        fit = ProofBudget(a.max_proof_tokens, lambda s: len(tok(s, add_special_tokens=False)["input_ids"]) + 1, a.tokenizer)
    counts = build_minif2f_pair(a.out, a.source, a.seed, [d for d in a.noisy_domains.split(",") if d], fit)
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
