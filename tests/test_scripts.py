"""The exp/ scripts end to end on their small configs (real MiniLM, real files)."""

import json

import pytest

from prm.config import parse
from prm.io import REPO_ROOT

CONFIGS = REPO_ROOT / "exp" / "configs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """A MiniLM PRM from exp/train_prm.py's tiny config (4 optimizer steps)."""
    from exp.train_prm import TYPES, main

    out = tmp_path_factory.mktemp("results")
    metrics = main(*parse(TYPES, ["--config", str(CONFIGS / "train_prm" / "tiny.yaml"), "--results_dir", str(out)]))
    run = out / "train_prm" / "tiny"
    return run, metrics


def test_train_prm_writes_run_dir(trained):
    run, metrics = trained
    for name in ("config.json", "metrics.json", "log.jsonl", "predictions.jsonl", "model/prm_config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 0 and "torch" in cfg["versions"] and cfg["config"]["TrainData"]["format"] == "gsm8k_errors"
    assert cfg["complete"] is True and len(cfg["fingerprint"]) == 16
    assert metrics["steps"]["n_steps"] > 0 and "min" in metrics["solutions"]


def test_infer_prm(trained, tmp_path, capsys):
    from exp.infer_prm import TYPES, main

    out = tmp_path / "scores.jsonl"
    argv = ["--model", str(trained[0] / "model"), "--data", str(REPO_ROOT / "data" / "sample_stepwise.jsonl")]
    scored = main(*parse(TYPES, [*argv, "--output", str(out)]))
    assert len(scored) == 5 and len(out.read_text().splitlines()) == 5
    assert "solution score (min)" in capsys.readouterr().out
    assert all(0.0 <= s <= 1.0 for r in scored for s in r["step_scores"])
    # --dtype reaches the model: bf16 weights round the scores a little, never far
    bf16 = [s for r in main(*parse(TYPES, [*argv, "--device", "cpu", "--dtype", "bf16"])) for s in r["step_scores"]]
    fp32 = [s for r in scored for s in r["step_scores"]]
    assert bf16 != fp32 and max(abs(a - b) for a, b in zip(bf16, fp32)) < 0.05


def test_evaluate_processbench_on_champ_with_dev_split(trained, tmp_path):
    from exp.evaluate import TYPES, main

    m = main(*parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "processbench", "--format", "champ_fws", "--dev_fraction", "0.3", "--limit", "60", "--results_dir", str(tmp_path), "--run_name", "champ"]))
    assert 0.0 <= m["test"]["average_f1"] <= 1.0 and m["dev"]["n"] > 0
    assert (tmp_path / "evaluate" / "champ" / "predictions.jsonl").is_file()
    # the threshold is never chosen on the test data
    with pytest.raises(SystemExit, match="never chosen on the test data"):
        parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "processbench", "--format", "champ_fws", "--limit", "5", "--results_dir", str(tmp_path)])


def test_evaluate_best_of_n_and_steps(trained, tmp_path, fixtures):
    from exp.evaluate import TYPES, main

    bon = tmp_path / "bon.jsonl"
    bon.write_text(json.dumps({"problem": "What is 2+3?", "answer": "5", "candidates": [{"steps": ["2+3 = 5.", "The answer is 5."]}, {"steps": ["2+3 = 6.", "The answer is 6."]}]}) + "\n")
    m = main(*parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "best_of_n", "--data", str(bon), "--ns", "1", "2", "--results_dir", str(tmp_path), "--run_name", "bon"]))
    assert m["methods"]["oracle"][1]["accuracy"] == 1.0
    assert main(*parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "steps", "--data", str(fixtures / "processbench.jsonl"), "--results_dir", str(tmp_path),
                               "--run_name", "steps"]))["steps"]["n_steps"] == 4


def test_evaluate_steps_on_the_held_out_problems_only(trained, tmp_path):
    from exp.evaluate import TYPES, main
    from prm.data import load, split_by_problem

    data = REPO_ROOT / "data" / "sample_stepwise.jsonl"
    held = split_by_problem(load("stepwise", str(data)), 0.3, seed=0)[1]
    assert 0 < len(held) < 5  # the check below needs a split that leaves records out
    m = main(*parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "steps", "--data", str(data), "--format", "stepwise",
                            "--holdout_fraction", "0.3", "--results_dir", str(tmp_path), "--run_name", "held"]))
    # the interval resamples the held-out problems (sample-0: every step right; sample-2: a wrong step)
    ci = m["steps"]["auroc_by_problem"]
    assert ci["n_groups"] == 2 and ci["auroc"] == m["steps"]["auroc"] and ci["ci_low"] <= ci["auroc"] <= ci["ci_high"]
    assert m["solutions"]["min"]["auroc_by_problem"]["auroc"] == m["solutions"]["min"]["auroc"]
    rows = [json.loads(x) for x in (tmp_path / "evaluate" / "held" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(held["id"])
    with pytest.raises(SystemExit, match="holdout_fraction"):
        parse(TYPES, ["--model", str(trained[0] / "model"), "--task", "processbench", "--format", "champ_fws", "--threshold", "0.5",
                      "--holdout_fraction", "0.3"])


def test_math_shepherd_offline(tmp_path, shared_data):
    from exp.math_shepherd import TYPES, main

    m = main(*parse(TYPES, ["--config", str(CONFIGS / "math_shepherd" / "offline.yaml"), "--results_dir", str(tmp_path), "--num_train_epochs", "1"]))
    assert (tmp_path / "math_shepherd" / "offline_samples" / "metrics.json").is_file() and m["steps"]["n_steps"] > 0


@pytest.mark.slow
def test_train_prm_under_accelerate_launch(tmp_path, shared_data):
    # the trainer is plain transformers.Trainer, so `accelerate launch` (multi-GPU, DeepSpeed, FSDP
    # on real hardware) runs the same script; here one CPU process
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO_ROOT / "exp" / "train_prm.py"), "--config", str(CONFIGS / "train_prm" / "tiny.yaml"), "--results_dir", str(tmp_path), "--max_steps", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PRM_DATA_DIR": str(shared_data)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "train_prm" / "tiny" / "metrics.json").read_text())["steps"]["n_steps"] > 0
