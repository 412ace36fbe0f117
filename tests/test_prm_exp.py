"""The main job end to end on the embedded defaults (tiny config), and its one-line errors."""

import json
from pathlib import Path

import pytest

from prm.io import REPO_ROOT

TINY = str(REPO_ROOT / "exp" / "configs" / "prm_exp" / "tiny.yaml")


def test_bad_paths_are_one_line_errors(tmp_path, monkeypatch):
    from exp.prm_exp import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="error: --sft_model no_such_dir: no such directory"):
        cli(["--config", TINY, "--sft_model", "no_such_dir"])
    with pytest.raises(SystemExit, match="error: --dataset missing.jsonl: no such file"):
        cli(["--config", TINY, "--dataset", "missing.jsonl"])
    with pytest.raises(SystemExit, match="--method 2 needs ANTHROPIC_API_KEY"):
        cli(["--method", "2"])
    with pytest.raises(SystemExit, match="no graded data"):
        cli(["--config", TINY, "--skip_generation"])


@pytest.mark.slow
def test_embedded_default_end_to_end(tmp_path, monkeypatch):
    from exp.prm_exp import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    he = cli(["--config", TINY, "--reward", "HE"])
    work = next(Path("data/prm_exp").glob("method1-*"))
    for f in ("args.json", "mining.jsonl", "solutions.jsonl", "graded.jsonl"):
        assert (work / f).is_file(), f
    for f in ("train.jsonl", "test.jsonl", "prefix_layout.jsonl"):
        assert Path("data/prm_dataset_method1_HE", f).is_file(), f
    adapter = Path("math_prm_adapter/method1_HE")
    assert list(adapter.glob("checkpoint-*")) and (adapter / "final_checkpoint" / "adapter_model.safetensors").is_file()
    assert (adapter / "trainer_state.json").is_file()
    for f in ("config.json", "metrics.json", "log.jsonl", "predictions.jsonl"):
        assert Path("results/prm_exp/method1_HE", f).is_file(), f
    assert json.loads(Path("results/prm_exp/method1_HE/config.json").read_text())["config"]["verifier_used"] == "rules"
    assert he["data"]["solutions"] > 0 and he["verifier"] == "rules"
    # a one-class held-out split is flagged in metrics.json (None when both classes are there)
    assert "single_class" in he["steps"] and (he["steps"]["single_class"] is None) == (he["steps"]["auroc"] is not None)
    # SE reuses the graded data: nothing is generated again
    graded = (work / "graded.jsonl").read_text()
    se = cli(["--config", TINY, "--reward", "SE", "--skip_generation"])
    assert (work / "graded.jsonl").read_text() == graded and se["data"]["steps"] == he["data"]["steps"]
    assert Path("results/prm_exp/method1_SE/metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.api
def test_claude_verifier_run_asks_and_never_leaks_the_key(tmp_path, monkeypatch):
    from exp.prm_exp import cli
    from prm.testing.fake_anthropic import FakeAnthropic

    server = FakeAnthropic()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET-999")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        # auto picks claude when a key is set; without a terminal, paid work needs --yes
        with pytest.raises(SystemExit, match="pass --yes"):
            cli(["--config", TINY, "--max_questions", "2"])
        assert not server.requests
        m = cli(["--config", TINY, "--max_questions", "2", "--yes"])
        assert m["verifier"] == "claude" and m["api_usage"]["grading"]["requests"] == len(server.requests) > 0
        for f in Path(".").rglob("*"):
            if f.is_file() and f.suffix in (".json", ".jsonl", ".txt", ".md", ""):
                assert "sk-ant-SECRET-999" not in f.read_text(errors="ignore"), f
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.api
def test_method2_claude_generates_and_grades_as_a_batch(tmp_path, monkeypatch):
    from exp.prm_exp import cli
    from prm.testing.fake_anthropic import FakeAnthropic

    server = FakeAnthropic()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET-222")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        args = ["--config", TINY, "--method", "2", "--max_questions", "2", "--solve_low", "0", "--yes", "--batch_api"]
        m = cli(args)
        sols = [json.loads(line) for line in next(Path("data/prm_exp").glob("method2-*")).joinpath("solutions.jsonl").read_text().splitlines()]
        assert sols and all(s.startswith("The two amounts") for row in sols for s in row["solutions"])  # Claude's, not SmolLM2's
        assert m["api_usage"]["generation"]["requests"] == 2 * len(sols) and m["api_usage"]["grading"]["batch"] is True
        assert server.batch_creates == 2  # one batch for generation, one for grading
        assert Path("data/prm_dataset_method2_HE/prefix_layout.jsonl").is_file() and Path("results/prm_exp/method2_HE/metrics.json").is_file()
        n = len(server.requests)
        cli(args)  # a rerun pays nothing
        assert len(server.requests) == n
        for f in Path(".").rglob("*"):
            if f.is_file() and f.suffix in (".json", ".jsonl"):
                assert "sk-ant-SECRET-222" not in f.read_text(errors="ignore"), f
    finally:
        server.close()


@pytest.mark.slow
def test_mc_verifier_run(tmp_path, monkeypatch):
    from exp.prm_exp import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    m = cli(["--config", TINY, "--verifier", "mc", "--mc_completions", "2", "--max_questions", "2", "--solve_low", "0"])
    graded = [json.loads(line) for line in next(Path("data/prm_exp").glob("method1-*")).joinpath("graded.jsonl").read_text().splitlines()]
    assert m["verifier"] == "mc" and graded and all(len(g["step_estimates"]["mc_soft"]) == len(g["steps"]) for g in graded)


def test_consensus_flags_are_checked(tmp_path, monkeypatch):
    from exp.prm_exp import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--consensus unknown labeler judge; known: claude, rules, reference, mc"):
        cli(["--config", TINY, "--verifier", "consensus", "--consensus", "mc,judge"])
    with pytest.raises(SystemExit, match="--consensus needs two or more different labelers"):
        cli(["--config", TINY, "--verifier", "consensus", "--consensus", "rules,rules"])


@pytest.mark.slow
def test_consensus_run_reports_agreement_and_reuses_rollouts(tmp_path, monkeypatch):
    from exp.prm_exp import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    args = ["--config", TINY, "--verifier", "consensus", "--mc_search", "binary", "--mc_completions", "2", "--max_questions", "2"]
    m = cli([*args, "--consensus", "mc,reference"])
    c = m["consensus"]
    assert c["labelers"] == ["mc", "reference"] and c["solutions"] == c["kept"] + c["dropped"] > 0
    assert c["agreement_rate"] == c["kept"] / c["solutions"] and sum(c["dropped_by_reason"].values()) == c["dropped"]
    assert m["mc_cost"]["search"] == ["binary"] and m["mc_cost"]["rollouts_per_solution"] >= 0
    work = next(Path("data/prm_exp").glob("method1-*"))
    rollouts = (work / "rollouts.jsonl").read_text() if (work / "rollouts.jsonl").is_file() else ""
    # another rule: graded again from the stored rollouts, nothing sampled
    m2 = cli([*args, "--consensus", "mc,rules", "--run_name", "rules_rule"])
    assert m2["consensus"]["labelers"] == ["mc", "rules"] and m2["mc_cost"]["sampled"] == 0
    assert ((work / "rollouts.jsonl").read_text() if rollouts else "") == rollouts
