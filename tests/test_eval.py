import json
import random

import numpy as np
import pytest

from prm.config import parse
from prm.data.inject import gsm8k_errors, inject_error
from prm.eval.bon import best_of_n, load_candidates, pick
from prm.eval.metrics import step_metrics
from prm.eval.processbench import choose_threshold, first_error, processbench_metrics
from prm.schema import DataError
from prm.steps import answer_step


@pytest.mark.parametrize(
    "scores, threshold, expected",
    [
        ([0.9, 0.2, 0.8], 0.5, 1),  # first step under the threshold
        ([0.9, 0.8], 0.5, -1),  # none under: predicted all correct
        ([0.4, 0.1], 0.5, 0),
        ([0.5], 0.5, -1),  # equal to the threshold is not below it
        ([], 0.5, -2),  # no score at all (a critic reply without an index): no prediction, never a label
    ],
)
def test_first_error(scores, threshold, expected):
    assert first_error(scores, threshold) == expected


def test_processbench_f1_and_threshold():
    labels = [1, -1, 0, -1]
    scores = [[0.9, 0.3], [0.9, 0.8], [0.6, 0.9], [0.7, 0.4]]
    m = processbench_metrics(labels, scores, ["a"] * 4, threshold=0.5)
    s = m["subsets"]["a"]
    # errors: first pred 1 (right), third pred -1 (wrong) -> 0.5; correct: second right, fourth wrong -> 0.5
    assert (s["acc_error"], s["acc_correct"], s["f1"]) == (0.5, 0.5, 0.5)
    t = choose_threshold(labels, scores, ["a"] * 4)
    assert processbench_metrics(labels, scores, ["a"] * 4, t)["average_f1"] >= 0.5
    # per-subset F1 and their average
    m2 = processbench_metrics(labels, scores, ["a", "a", "b", "b"], 0.5)
    assert set(m2["subsets"]) == {"a", "b"} and m2["average_f1"] == np.mean([v["f1"] for v in m2["subsets"].values()])


def test_step_metrics_binary_and_ternary():
    m = step_metrics([1, 0, 1, 0], np.array([0.9, 0.2, 0.4, 0.6]), "binary")
    assert m["accuracy"] == 0.5 and m["auroc"] == 0.75 and m["correct_support"] == 2
    t = step_metrics([2, 0, 1], np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]), "ternary")
    assert t["accuracy"] == 1.0 and t["neutral_f1"] == 1.0 and t["auroc"] == 1.0
    s = step_metrics([0.8, 0.1], np.array([0.7, 0.2]), "soft")
    assert s["accuracy"] == 1.0 and abs(s["soft_mse"] - 0.01) < 1e-9


def _bon_file(tmp_path):
    rows = [
        {"problem": "p1", "answer": "5", "candidates": [{"text": "a\n\nThe answer is 4"}, {"steps": ["b", "The answer is 5"]}, {"steps": ["c", "The answer is 4"]}]},
        {"problem": "p2", "answer": "7", "candidates": [{"steps": ["x", "The answer is 7"], "correct": True}, {"steps": ["y", "The answer is 8"]}]},
    ]
    p = tmp_path / "bon.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_best_of_n(tmp_path):
    problems = load_candidates(_bon_file(tmp_path))
    assert [c["correct"] for c in problems[0]["candidates"]] == [False, True, False]
    # the PRM likes the right candidate of p1 and the wrong one of p2
    for p, scores in zip(problems, [[[0.9, 0.2], [0.9, 0.9], [0.9, 0.3]], [[0.5, 0.5], [0.9, 0.9]]]):
        for c, s in zip(p["candidates"], scores):
            c["step_scores"] = s
    assert pick(problems[0]["candidates"], "majority") == 0  # "4" twice
    assert pick(problems[0]["candidates"], "prm_min") == 1
    assert pick(problems[0]["candidates"], "weighted_min") == 1  # 0.9 beats 0.2 + 0.3
    res = best_of_n(problems, [1, 3], ["min"], n_boot=200)
    acc = {m: [r["accuracy"] for r in rows] for m, rows in res["methods"].items()}
    assert acc["oracle"] == [0.5, 1.0] and acc["prm_min"] == [0.5, 0.5] and acc["majority"] == [0.5, 0.5]
    r = res["methods"]["prm_min"][1]
    assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]


def test_best_of_n_bad_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"problem": "p", "candidates": [{"steps": []}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'candidates\[0\]': needs non-empty 'steps' or 'text'"):
        load_candidates(p)


def test_inject_calculation_error():
    steps = ["She has 3*4 = <<3*4=12>>12 eggs.", "Then 12+1 = <<12+1=13>>13."]
    new, k, kind = inject_error(steps, random.Random(0), ("calculation",))
    assert kind == "calculation" and new[1 - k] == steps[1 - k] and new[k] != steps[k]
    wrong = new[k].split("=")[-1].split(">>")[0]
    assert wrong not in ("12", "13") and wrong in new[k].split(">>")[1]


@pytest.mark.parametrize("seed", range(5))
def test_inject_propagation_error(seed):
    steps = ["She has 3*4 = <<3*4=12>>12 eggs.", "Then 12+1 = <<12+1=13>>13 eggs."]
    new, k, kind = inject_error(steps, random.Random(seed), ("propagation",))
    # the second step now builds on a wrong copy of 12, and its own arithmetic is redone exactly
    assert (k, kind) == (1, "propagation") and new[0] == steps[0]
    expr, rest = new[1].split("<<")[1].split(">>")
    lhs, rhs = expr.split("=")
    a = lhs.split("+")[0]
    assert a != "12" and float(rhs) == float(a) + 1 and rest.startswith(rhs)
    assert new[1].startswith(f"Then {a}+1 = ")


def test_inject_error_kinds():
    steps = ["She has 3*4 = <<3*4=12>>12 eggs."]
    assert inject_error(steps, random.Random(0), ("propagation",)) is None  # nothing to propagate from
    with pytest.raises(ValueError, match="unknown error kind"):
        inject_error(steps, random.Random(0), ("typo",))


def test_gsm8k_errors_records():
    steps = ["She has 3*4 = <<3*4=12>>12 eggs.", "Then 12+1 = <<12+1=13>>13."]
    recs = gsm8k_errors({"question": "q?", "answer": "\n".join(steps) + "\n#### 13"}, index=0)
    ref, err = recs
    assert ref["labels"] == [1.0, 1.0] and "<<" not in ref["completions"][0]
    k = err["meta"]["injected_at"]
    assert err["labels"][k] == 0.0 and all(v == 1.0 for v in err["labels"][:k]) and all(v is None for v in err["labels"][k + 1 :])
    # reproducible
    assert gsm8k_errors({"question": "q?", "answer": "\n".join(steps) + "\n#### 13"}, index=0) == recs


def test_gsm8k_errors_answer_step():
    # the closing "The answer is" step: right in the reference, unlabeled after the error, and the
    # injected error itself unchanged (it never lands on the answer step)
    steps = ["She has 3*4 = <<3*4=12>>12 eggs.", "Then 12+1 = <<12+1=13>>13."]
    row = {"question": "q?", "answer": "\n".join(steps) + "\n#### 13"}
    plain = gsm8k_errors(row, index=0)
    ref, err = gsm8k_errors(row, index=0, answer_step=True)
    assert ref["completions"][-1] == answer_step("13") and ref["labels"] == [1.0, 1.0, 1.0]
    assert err["completions"][:-1] == plain[1]["completions"] and err["labels"] == plain[1]["labels"] + [None]


def test_run_turns_user_errors_into_one_line(tmp_path):
    from dataclasses import dataclass, field

    from prm.config import run
    from prm.data import load

    @dataclass
    class C:
        data: str = field(metadata={"help": "a file"})

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "completions": ["a"], "labels": [1.0, 0.0], "label_scheme": "binary"}\n')
    cases = [  # (data path, expected message): a missing file, a bad row named by file and line
        (str(tmp_path / "missing.jsonl"), "no such file"),
        (str(bad), "bad.jsonl:1"),
    ]
    for path, msg in cases:
        with pytest.raises(SystemExit) as e:
            run(lambda c: list(load("stepwise", c.data)), C, argv=["--data", path])
        assert str(e.value).startswith("error: ") and msg in str(e.value)
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: it keeps its traceback
        run(lambda c: 1 / 0, C, argv=["--data", "x"])


def test_config_yaml_then_flags(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class C:
        data: str = field(metadata={"help": "required"})
        lr: float = 1e-3
        name: str = "x"

    y = tmp_path / "c.yaml"
    y.write_text("data: a.jsonl\nlr: 0.5\n")
    (c,) = parse(C, ["--config", str(y), "--lr", "0.25"])
    assert (c.data, c.lr, c.name) == ("a.jsonl", 0.25, "x")
    y.write_text("data: a.jsonl\nlearning_rat: 0.5\n")
    with pytest.raises(SystemExit):
        parse(C, ["--config", str(y)])


def test_run_config_has_no_secrets(tmp_path):
    from prm.io import start_run

    run = start_run(tmp_path / "r", {"claude": {"anthropic_api_key": "sk-live-123", "model": "m"}, "hf_token": "hf_x"}, seed=3)
    text = (run / "config.json").read_text()
    assert "sk-live-123" not in text and "hf_x" not in text and '"model": "m"' in text


class _CountingPRM:
    """A scorer that records its calls: score_batch(items, batch_size) -> one score per step."""

    def __init__(self):
        self.calls = []

    def score_batch(self, items, batch_size=16):
        self.calls.append(len(items))
        return [[0.5] * len(steps) for _, steps in items]


def test_scoring_shows_one_bar_for_the_whole_stage(monkeypatch):
    # an evaluation stage (steps, ProcessBench, best-of-N candidates) is one bar counting its items, not one per batch
    import prm.eval.steps as steps_mod
    from prm.eval.steps import score_items

    bars = []

    class Recording:
        def __init__(self, total=None, desc=None, unit=None, **kw):
            self.rec = {"total": total, "desc": desc, "unit": unit, "n": 0}
            bars.append(self.rec)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, n=1):
            self.rec["n"] += n

    monkeypatch.setattr(steps_mod, "tqdm", Recording)
    prm = _CountingPRM()
    items = [(f"q{i}", ["a", "b"]) for i in range(50)]
    scores = score_items(prm, items, batch_size=2, desc="scoring candidates", unit="candidate")
    assert len(scores) == 50 and len(prm.calls) > 1  # several score_batch calls...
    assert bars == [{"total": 50, "desc": "scoring candidates", "unit": "candidate", "n": 50}]  # ...one bar


@pytest.mark.parametrize("labels, scores, groups, auroc", [
    ([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], ["a", "a", "b", "b"], 1.0),  # separable: 1.0, interval inside [0, 1]
    ([1, 1, 1], [0.9, 0.1, 0.8], ["a", "b", "c"], None),  # one class: no AUROC, no interval
])
def test_bootstrap_auroc_resamples_groups(labels, scores, groups, auroc):
    from prm.eval.metrics import bootstrap_auroc

    out = bootstrap_auroc(labels, scores, groups, n_boot=200)
    assert out["auroc"] == auroc
    if auroc is None:
        assert out["ci_low"] is None and out["n_groups"] == 0
    else:
        assert 0 <= out["ci_low"] <= out["auroc"] <= out["ci_high"] <= 1 and out["n_groups"] == 2
