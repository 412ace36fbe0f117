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
from collections.abc import Iterable
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


def cot_response(steps: list[str]) -> str:
    """DreamPRM's ``### Step k:`` layout; read back with ``split_mode=headers``."""
    return "\n".join(f"### Step {k}: {s}" for k, s in enumerate(steps, 1))


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


def minif2f_rows(src: Path, split: str, seed: int = 0) -> list[dict]:
    """Meta/held-out rows from miniF2F (``minif2f_lean4.jsonl`` + ``minif2f_informal.jsonl``)."""
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
        lean = formal.get(name, {})
        prompt = _lean_comment(lean["informal_prefix"]) if lean.get("informal_prefix") else r.get("informal_statement", "")
        rng = random.Random(f"{seed}-{name}")
        out.append(_row(f"minif2f-{name}", prompt, lean.get("formal_statement"), steps, [1.0] * len(steps), 1.0, "minif2f"))
        err = _with_error(f"minif2f-{name}", prompt, lean.get("formal_statement"), steps, "minif2f", rng)
        if err:
            out.append(err)
    return out


def build_minif2f_pair(out_dir: str | Path, source: str | Path | None = None, seed: int = 0, noisy_domains: Iterable[str] = ()) -> dict:
    """Write ``train.jsonl``, ``meta.jsonl`` (miniF2F valid) and ``heldout.jsonl`` (miniF2F test)
    under ``out_dir`` from ``source`` (default: `prm.io.data_dir`); returns row counts."""
    root = Path(source) if source else data_dir()
    if root is None or not (root / "dreamprm").is_dir() or not (root / "minif2f").is_dir():
        raise FileNotFoundError(f"need dreamprm/ and minif2f/ under the data folder ({root}); set PRM_DATA_DIR")
    out = Path(out_dir)
    parts = {"train": train_rows(root / "dreamprm", seed, noisy_domains), "meta": minif2f_rows(root / "minif2f", "valid", seed),
             "heldout": minif2f_rows(root / "minif2f", "test", seed)}
    counts = {}
    for name, rows in parts.items():
        write_jsonl(out / f"{name}.jsonl", rows)
        counts[name] = {"rows": len(rows), "meta_label_1": sum(r["meta_label"] == 1.0 for r in rows),
                        "domains": dict(sorted(Counter(r["domain"] for r in rows).items()))}
    (out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--source", default=None, help="data folder with dreamprm/ and minif2f/ (default: $PRM_DATA_DIR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noisy_domains", default="", help="comma-separated train domains whose step labels become coin flips")
    a = ap.parse_args(argv)
    counts = build_minif2f_pair(a.out, a.source, a.seed, [d for d in a.noisy_domains.split(",") if d])
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
