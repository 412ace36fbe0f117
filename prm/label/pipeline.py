"""The prm_exp pipeline: mine questions the SFT model gets wrong, sample solutions, grade every
step, turn the grades into HE/SE rewards, and write PRM training data.

Every stage appends to a JSONL file in the work directory and skips what it already holds, so a
killed run rerun with the same arguments continues where it stopped:

    <work>/mining.jsonl     one row per examined question: samples, fail rate, kept?
    <work>/solutions.jsonl  one row per kept question: its rollouts (text)
    <work>/graded.jsonl     one row per solution: steps, step verdicts, final-answer verdict

The work directory depends on the method, not on the reward, so HE and SE share generation and
grading (``--reward SE --skip_generation`` after an HE run costs nothing).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm.answers import is_correct
from prm.io import append_jsonl, read_appended, write_jsonl
from prm.label.labels import first_error_labels, reward_to_label, step_rewards
from prm.label.progress import progress
from prm.label.verify import RulesVerifier, Verifier
from prm.schema import make_record
from prm.steps import split_steps

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    mine_samples: int = 4  # SFT samples per question to estimate its solve rate
    solve_low: float = 0.3  # keep questions the SFT model solves at least this often...
    solve_high: float = 0.8  # ...and at most this often: both right and wrong solutions to learn from
    num_samples: int = 1000  # questions to keep
    max_questions: int | None = None  # examine at most this many


def _done(path: Path, key: str = "id") -> dict[str, dict]:
    return {row[key]: row for row in read_appended(path)}  # a torn last line (a kill mid-write) is dropped and redone


def _counted(bar: Any, sample: Callable[[list[str], int], list[list[str]]], prompts: list[str], n: int) -> list[list[str]]:
    """``sample(prompts, n)``; the project's generators count their texts into the open stage bar,
    any other sampler is counted here when the call returns."""
    before = getattr(bar, "n", None)
    out = sample(prompts, n)
    if before is not None and bar.n == before:
        bar.update(len(prompts) * n)
    return out


def mine(problems: Sequence[dict], sample: Callable[[list[str], int], list[list[str]]], cfg: MiningConfig, path: Path, batch: int = 8) -> list[dict]:
    """Keep questions whose solve rate under the SFT model (share of ``mine_samples`` samples that
    reach the answer) lies in [solve_low, solve_high]: questions it sometimes solves and sometimes
    fails, whose rollouts hold both right and wrong steps.

    ``problems`` are stepwise records with ``answer``; ``sample(prompts, n)`` returns n texts per
    prompt. Returns the kept rows (``id``, ``prompt``, ``answer``, ``samples``)."""
    seen = _done(path)
    kept = [r for r in seen.values() if r["kept"]]
    todo = [p for p in problems if p["id"] not in seen][: None if cfg.max_questions is None else max(0, cfg.max_questions - len(seen))]
    with progress(len(todo) * cfg.mine_samples, "mining") as bar:  # counts sampled solutions
        for b in range(0, len(todo), batch):
            if len(kept) >= cfg.num_samples:
                break
            chunk = todo[b : b + batch]
            texts = _counted(bar, sample, [p["prompt"] for p in chunk], cfg.mine_samples)
            for p, samples in zip(chunk, texts):
                rate = sum(is_correct(t, p["answer"]) is True for t in samples) / len(samples)
                row = {"id": p["id"], "prompt": p["prompt"], "answer": p["answer"], "samples": samples, "solve_rate": rate,
                       "kept": cfg.solve_low <= rate <= cfg.solve_high and len(kept) < cfg.num_samples}
                append_jsonl(path, row)
                if row["kept"]:
                    kept.append(row)
            bar.set_postfix(kept=len(kept))
    log.info("mining: %d questions examined, %d kept (solve rate in [%.2f, %.2f])", len(_done(path)), len(kept), cfg.solve_low, cfg.solve_high)
    return kept[: cfg.num_samples]


def rollouts(kept: Sequence[dict], num_rollouts: int, sample: Callable[[list[str], int], list[list[str]]], path: Path, batch: int = 8,
             reuse_samples: bool = True) -> list[dict]:
    """``num_rollouts`` solutions per kept question. With ``reuse_samples`` the mining samples
    (same model, same settings) count as the first rollouts and only the missing ones are
    generated; Method 2 passes False (mining used the SFT model, rollouts come from Claude)."""
    done = _done(path)
    need = [k for k in kept if k["id"] not in done]
    chunks = [need[b : b + batch] for b in range(0, len(need), batch)]
    have = [[list(k.get("samples", [])) if reuse_samples else [] for k in chunk] for chunk in chunks]
    extra = [max(0, num_rollouts - min(len(h) for h in hs)) for hs in have]  # solutions to write per question of a chunk
    with progress(sum(e * len(c) for e, c in zip(extra, chunks)), "generating") as bar:
        for chunk, hs, e in zip(chunks, have, extra):
            more = _counted(bar, sample, [k["prompt"] for k in chunk], e) if e else [[] for _ in chunk]
            for k, h, m in zip(chunk, hs, more):
                sols = (h + m)[:num_rollouts]
                row = {"id": k["id"], "prompt": k["prompt"], "answer": k["answer"], "solutions": sols}
                append_jsonl(path, row)
                done[k["id"]] = row
    return [done[k["id"]] for k in kept]


def grade(solutions: Sequence[dict], verifier: Verifier, path: Path, split_mode: str = "auto") -> list[dict]:
    """Grade every solution's steps with ``verifier`` (any of `prm.label.verify.VERIFIERS`); one row per
    solution, with the labeler that wrote it (``labeler``), a Monte-Carlo grade's cost (``label_stats``)
    and a consensus grade's verdicts of each labeler (``verdicts``)."""
    done = _done(path)
    # a row graded by another labeler (another consensus rule, another Monte-Carlo search) is graded
    # again; the labelers' own caches make that free where the work was done before
    labeler = getattr(verifier, "labeler_id", verifier.name)
    todo = []
    for q in solutions:
        for j, text in enumerate(q["solutions"]):
            sid = f"{q['id']}#{j}"
            steps = split_steps(text, split_mode)
            if (sid not in done or done[sid].get("labeler", verifier.name) != labeler) and steps:  # no labeler: written by the plain-named one
                todo.append((sid, q, steps))
    items = [(q["prompt"], steps, q["answer"]) for _, q, steps in todo]
    grades = verifier.grade_many(items, desc=f"grading ({verifier.name})") if items else []
    failed = 0
    for (sid, q, steps), g in zip(todo, grades):
        if g is None:  # a transient failure (batch request errored/expired): not written, a rerun retries it
            failed += 1
            continue
        row = {"id": sid, "question_id": q["id"], "prompt": q["prompt"], "answer": q["answer"], "steps": steps,
               "step_correct": g.step_correct, "solution_correct": g.solution_correct, "labeler": labeler}
        if g.estimates:
            row["step_estimates"] = g.estimates
        if g.stats:
            row["label_stats"] = g.stats
        if g.members:
            row["verdicts"] = g.members
        append_jsonl(path, row)
        done[sid] = row
    if failed:
        log.warning("%d solutions could not be graded this time (see above); rerun to grade them", failed)
    return [done[f"{q['id']}#{j}"] for q in solutions for j in range(len(q["solutions"])) if f"{q['id']}#{j}" in done]


def graded_rows(path: Path) -> list[dict]:
    """The graded rows of a work file, the latest row of each solution (a regrade appends a newer one)."""
    return list(_done(path).values())


def sampled_graded(problems: Sequence[dict], sample: Callable[[list[str], int], list[list[str]]], n: int, work: Path,
                   verifier: Verifier | None = None) -> list[dict]:
    """``n`` model solutions per problem (resumable under ``work``), each step graded by ``verifier``
    (default: rules); returns the graded rows of `grade`."""
    kept = [{"id": p["id"], "prompt": p["prompt"], "answer": p["answer"]} for p in problems]
    sols = rollouts(kept, n, sample, work / "solutions.jsonl")
    return grade(sols, verifier or RulesVerifier(), work / "graded.jsonl")


def graded_records(graded: Sequence[dict], source: str = "smollm2_rules") -> list[dict]:
    """Binary first-error stepwise records from graded rows (rows with no labeled step dropped)."""
    out = []
    for g in graded:
        labels = first_error_labels(g["step_correct"])
        if any(lab is not None for lab in labels):
            out.append(make_record(g["prompt"], g["steps"], labels, "binary", answer=g["answer"], id=g["id"], source=source,
                                   meta={"solution_correct": g["solution_correct"]}))
    return out


# The original prm_exp.py's per-prefix training text, kept verbatim for compatibility.
PREFIX_TEMPLATE = "### Question:\n{question}\n\n### Partial Solution:\n{partial}\n\n### Evaluate this step:\n"


def to_records(graded: Sequence[dict], reward: str) -> tuple[list[dict], list[dict]]:
    """Stepwise records (soft labels (r+1)/2 of the HE/SE reward) and the original per-prefix
    layout (``input_text``, ``target_text`` "CORRECT (+1)"/"INCORRECT (-1)", ``reward_value``).

    A solution with no stated final answer counts as incorrect for HE; a step the verifier could
    not judge (None) gets no label."""
    records, prefix = [], []
    for g in graded:
        steps, verdicts = g["steps"], g["step_correct"]
        sol_ok = bool(g["solution_correct"])
        rewards = step_rewards(reward, [bool(v) for v in verdicts], sol_ok)
        labels = [None if v is None else reward_to_label(r) for v, r in zip(verdicts, rewards)]
        if all(lab is None for lab in labels):
            continue
        records.append(make_record(g["prompt"], steps, labels, "soft", answer=g["answer"], id=g["id"], source=f"prm_exp_{reward}",
                                   meta={"question_id": g["question_id"], "solution_correct": g["solution_correct"], "rewards": rewards, "step_correct": verdicts}))
        for k, (v, r) in enumerate(zip(verdicts, rewards)):
            if v is None:
                continue
            partial = "\n".join(steps[: k + 1])
            prefix.append({"input_text": PREFIX_TEMPLATE.format(question=g["prompt"], partial=partial),
                           "target_text": "CORRECT (+1)" if v else "INCORRECT (-1)", "reward_value": r, "id": f"{g['id']}@{k}"})
    return records, prefix


def split_questions(records: Sequence[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole questions (all their solutions) for evaluation."""
    qids = sorted({r["meta"]["question_id"] for r in records})
    rng = random.Random(seed)
    rng.shuffle(qids)
    n_test = max(1, round(len(qids) * test_fraction)) if len(qids) > 1 else 0
    test_q = set(qids[:n_test])
    return [r for r in records if r["meta"]["question_id"] not in test_q], [r for r in records if r["meta"]["question_id"] in test_q]


def save_dataset(out_dir: Path, train: list[dict], test: list[dict], prefix: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "test.jsonl", test)
    write_jsonl(out_dir / "prefix_layout.jsonl", prefix)
