"""Every converter on the real public files (skipped when the data folder is absent)."""

import json

import pytest

from prm.answers import answers_equal, extract_answer
from prm.data import Report, load


@pytest.mark.parametrize(
    "fmt, path, options, rows, records, rejected",
    [
        ("math_shepherd", "samples/samples_math-shepherd.jsonl", {}, 7, 7, {}),
        ("prm800k", "samples/samples_prm800k.jsonl", {}, 6, 36, {}),
        ("prm800k", "samples/samples_prm800k.jsonl", {"paths": "chosen"}, 6, 6, {}),
        ("prm800k", "samples/prm800k-phase1-train-example.json", {}, 3, 123, {}),
        ("prm800k", "samples/prm800k-phase2-train-example.json", {"label_scheme": "binary"}, 1, 4, {}),
        ("gsm8k", "gsm8k/train.jsonl", {}, 7473, 7473, {}),
        ("gsm8k", "gsm8k/test.jsonl", {}, 1319, 1319, {}),
        ("math", "math/math500.jsonl", {}, 500, 500, {}),
        ("math", "math/test.jsonl", {}, 5000, 5000, {}),
        ("minif2f", "minif2f/minif2f_lean4.jsonl", {}, 488, 488, {}),
        ("minif2f", "minif2f/minif2f_informal.jsonl", {}, 488, 488, {}),
        ("openmathinstruct", "dreamprm/openmathinstruct-2-train.json", {}, 1000, 1000, {}),
        ("dreamprm_math", "dreamprm/train_math.json", {}, 1000, 1000, {}),
        # 41 released rows count their steps differently from their text (header vs paragraph)
        ("dreamprm_math", "dreamprm/meta_math.json", {"prompts": "dreamprm/train_math.json"}, 1000, 959, {"step_labels: labels/steps length mismatch": 41}),
    ],
)
def test_real_file(shared_data, fmt, path, options, rows, records, rejected):
    options = {k: str(shared_data / v) if k == "prompts" else v for k, v in options.items()}
    report = Report()
    ds = load(fmt, shared_data / path, strict=False, report=report, **options)
    assert (report.rows, report.records, dict(report.rejected)) == (rows, records, rejected)
    assert len(ds) == records


def test_prm800k_phase2_real(shared_data):
    r = load("prm800k", shared_data / "samples/prm800k-phase2-train-example.json", label_scheme="binary", paths="chosen")[0]
    # 7 rated steps up to the first -1 (neutral counts as negative by default), 6 unlabeled after it
    assert r["labels"] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0] + [None] * 6
    assert r["answer"] == "28800"


def test_champ_first_wrong_steps():
    ds = load("champ_fws")
    assert len(ds) == 540
    with_error = [r for r in ds if r["meta"]["label"] >= 0]
    assert len(with_error) == 444
    for r in with_error:
        k = r["meta"]["label"]
        assert r["labels"][k] == 0.0 and set(r["labels"][:k]) <= {1.0}


def test_reference_answers_check_out(shared_data):
    # the one answer checker agrees with the gold answers of the reference solutions
    math500 = [json.loads(x) for x in (shared_data / "math/math500.jsonl").read_text().splitlines()]
    assert all(answers_equal(extract_answer(r["solution"]), r["answer"]) for r in math500)
    gsm = load("gsm8k", shared_data / "gsm8k/test.jsonl")
    raw = [json.loads(x) for x in (shared_data / "gsm8k/test.jsonl").read_text().splitlines()]
    assert all(answers_equal(extract_answer(x["answer"]), r["answer"]) for x, r in zip(raw, gsm))
