"""A run directory belongs to the run that wrote it (prm.io.RunDir): fingerprints, refusals,
incomplete runs, reuse only when the artifacts exist; checkpoint folders too (own_dir)."""

import json

import pytest

from prm.io import RunDir, RunDirError, fingerprint, own_dir

A = {"TrainData": {"data": "x.jsonl", "limit": None}, "Args": {"learning_rate": 1e-4, "logging_steps": 10, "output_dir": "o"}}


def _with(**kw):
    return {**A, "Args": {**A["Args"], **kw}}


def test_fingerprint_ignores_settings_that_do_not_change_results():
    assert fingerprint(A) == fingerprint(_with(logging_steps=50, output_dir="elsewhere"))  # cadence, paths
    assert fingerprint(A) != fingerprint(_with(learning_rate=2e-4))
    assert fingerprint({"a": {"anthropic_api_key": "sk-1"}}) == fingerprint({"a": {"anthropic_api_key": "sk-2"}})  # never hashes a key


def test_claim_begin_finish_and_rerun(tmp_path):
    d = tmp_path / "results" / "exp" / "run"
    run = RunDir.claim(d, A, seed=0)
    assert not d.exists()  # claiming writes nothing
    run.begin()
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["complete"] is False and cfg["fingerprint"] == run.fingerprint
    assert not run.finished()  # begun, not finished
    run.finish({"auroc": 0.7})
    assert run.finished() and not run.finished("model")  # finished needs the named artifacts
    (d / "model").mkdir()
    assert RunDir(d, _with(logging_steps=99), 0).finished("model")

    # same settings: the rerun may take the directory again; a failed rerun leaves no old metrics
    again = RunDir.claim(d, A, seed=0)
    again.begin()
    assert not (d / "metrics.json").exists() and not again.finished()

    # other settings: refused with the differing field named, unless --overwrite
    with pytest.raises(RunDirError, match=r"other settings \(Args.learning_rate differ\); choose another --run_name"):
        RunDir.claim(d, _with(learning_rate=3e-4))
    other = RunDir.claim(d, _with(learning_rate=3e-4), overwrite=True)
    other.begin()
    assert not (d / "model").exists()  # the other run's files are gone
    assert json.loads((d / "config.json").read_text())["fingerprint"] == other.fingerprint


def test_files_without_fingerprint_are_not_taken(tmp_path):
    d = tmp_path / "old_run"
    d.mkdir()
    (d / "metrics.json").write_text("{}")  # e.g. committed results of an older version
    with pytest.raises(RunDirError, match="without a settings fingerprint"):
        RunDir.claim(d, A)
    assert not RunDir(d, A, 0).finished()  # and they never count as this run's results


def test_results_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match=r"--results_dir: .*f is a file"):
        RunDir.claim(tmp_path / "f" / "exp" / "run", A)


def test_checkpoint_folder_belongs_to_one_run(tmp_path):
    # prm_exp's adapter checkpoints: a second run with another learning rate used to resume from
    # the first run's checkpoint and report its adapter
    ckpt = tmp_path / "math_prm_adapter" / "method1_HE"
    own_dir(ckpt, fingerprint(A))
    (ckpt / "checkpoint-4").mkdir()
    own_dir(ckpt, fingerprint(A))  # the same run resumes
    assert (ckpt / "checkpoint-4").is_dir()
    with pytest.raises(RunDirError, match="checkpoints of a run with other settings"):
        own_dir(ckpt, fingerprint(_with(learning_rate=9e-4)))
    own_dir(ckpt, fingerprint(_with(learning_rate=9e-4)), overwrite=True)
    assert not (ckpt / "checkpoint-4").exists()
