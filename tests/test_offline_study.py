"""The offline study's building blocks, and a smoke run of every stage on tiny settings."""

import json
from pathlib import Path

import pytest

from prm.eval.bon import load_candidates
from prm.io import REPO_ROOT, write_jsonl
from prm.label.pipeline import graded_records
from prm.results import load_run
from prm.study import bon_candidates, results_table


def test_graded_records_keep_labeled_solutions():
    graded = [{"id": "a#0", "prompt": "q", "answer": "3", "steps": ["1 + 2 = 3", "The answer is: 3"], "step_correct": [True, True], "solution_correct": True},
              {"id": "a#1", "prompt": "q", "answer": "3", "steps": ["x"], "step_correct": [None], "solution_correct": None}]
    recs = graded_records(graded)
    assert len(recs) == 1 and recs[0]["labels"] == [1.0, 1.0] and recs[0]["label_scheme"] == "binary"


def test_bon_candidates_are_valid_and_shuffled(tmp_path):
    problems = [{"id": f"p{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i), "completions": [f"{i} + {i} = {2 * i}"]} for i in range(6)]
    samples = {f"p{i}": [f"{i} + {i} = {2 * i + 1}\nThe answer is: {2 * i + 1}", "no answer here"] for i in range(6)}
    sets = bon_candidates(problems, samples, 3, seed=1)
    assert all(len(s["candidates"]) == 3 for s in sets)
    assert {next(j for j, c in enumerate(s["candidates"]) if c["origin"] == "reference") for s in sets} != {0}  # not always first
    write_jsonl(tmp_path / "bon.jsonl", sets)
    loaded = load_candidates(tmp_path / "bon.jsonl")
    for s, orig in zip(loaded, sets):  # the reference is the one correct candidate; its stated answer is read back
        assert [c["correct"] for c in s["candidates"]] == [c["origin"] == "reference" for c in orig["candidates"]]


def test_results_table_reads_metrics(tmp_path):
    def run(name, metrics):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(metrics))
        return load_run(d)

    t = run("a", {"steps": {"auroc": 0.9, "incorrect_f1": 0.5}})
    pb = run("a__champ", {"test": {"average_f1": 0.25, "threshold": 0.8}, "test_at_0.5": {"average_f1": 0.0}})
    bon = run("a__bon", {"ns": [1, 4], "methods": {"prm_min": [{"n": 1, "accuracy": 0.2}, {"n": 4, "accuracy": 0.6}],
                                                   "majority": [{"n": 1, "accuracy": 0.2}, {"n": 4, "accuracy": 0.3}]}})
    sampled = run("a__sampled", {"steps": {"auroc": 0.7, "incorrect_f1": 0.4}})
    table = results_table([("a", t, sampled, pb, bon), ("b", None, None, None, None)])
    assert "| a | 0.900 | 0.500 | 0.700 | 0.400 | 0.250 (t=0.80) | 0.000 | 0.600 | 0.300 | 4 |" in table
    assert "| b | – | – | – | – | – | – | – | – | – |" in table


@pytest.mark.slow
def test_study_smoke_run(tmp_path, monkeypatch, shared_data):
    from exp.offline_study import TYPES, main
    from prm.config import parse

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRM_DATA_DIR", str(shared_data))
    cfg, ra = parse(TYPES, ["--config", str(REPO_ROOT / "exp/configs/offline_study/tiny.yaml"), "--variants", "balanced"])
    table = main(cfg, ra)
    assert "| balanced |" in table and Path("results/offline_study/README.md").is_file()
    for run in ("balanced", "balanced__sampled", "balanced__champ", "balanced__bon"):
        assert Path("results/offline_study", run, "metrics.json").is_file(), run
    assert Path("data/offline_study/bon_candidates.jsonl").is_file() and Path("data/offline_study/sampled.jsonl").is_file()
    assert Path("data/offline_study/heldout_sampled.jsonl").is_file()
    # no recipe sets bf16: the variants train in bf16 only where this machine computes it fast
    import json

    from prm.device import bf16_default

    saved = json.loads(Path("results/offline_study/balanced/config.json").read_text())
    assert saved["config"]["PRMTrainingArguments"]["bf16"] == bf16_default()
    # the mixed variants' data: every SmolLM2 solution once, or sampled_repeat times, after the references
    from prm.io import read_jsonl

    n = {f: len(read_jsonl(Path("data/offline_study", f + ".jsonl"))) for f in ("balanced", "sampled", "balanced_sampled", "sampled_upweighted")}
    assert n["sampled"] > 0 and n["balanced_sampled"] == n["balanced"] + n["sampled"]
    assert n["sampled_upweighted"] == n["balanced"] + cfg.sampled_repeat * n["sampled"]

    # a rerun reuses every finished run (same settings, artifacts there) and trains nothing
    stamp = {p: p.stat().st_mtime_ns for p in Path("results/offline_study").rglob("metrics.json")}
    main(cfg, ra)
    assert {p: p.stat().st_mtime_ns for p in Path("results/offline_study").rglob("metrics.json")} == stamp
    # "finished" means the artifacts exist: without its model (a fresh clone) the variant trains again
    import shutil

    shutil.rmtree("results/offline_study/balanced/model")
    cfg2, ra2 = parse(TYPES, ["--config", str(REPO_ROOT / "exp/configs/offline_study/tiny.yaml"), "--variants", "balanced", "--stages", "train"])
    main(cfg2, ra2)
    assert Path("results/offline_study/balanced/model").is_dir()
