"""Figures: every maker runs on the committed results, output is byte-identical on a rerun, and a
partial results tree is skipped, not an error."""

import json

import pytest

from exp.make_figures import cli as main
from prm.io import REPO_ROOT
from prm.plots import load_all


def test_figures_are_deterministic(tmp_path):
    assert main(["--out", str(tmp_path / "a")]) == 0
    assert main(["--out", str(tmp_path / "b")]) == 0
    a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "README.md" in a and any(n.endswith(".pdf") for n in a) and any(n.endswith(".png") for n in a)
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_partial_results_tree_and_unknown_names(tmp_path, capsys):
    run = tmp_path / "results" / "prm_exp" / "method1_SE"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"steps": {"n_steps": 3, "auroc": None, "accuracy": 0.5},
                                                  "data": {"correct_step_share": 0.25, "steps": 4, "solutions": 2}}))
    assert main(["--results", str(tmp_path / "results")]) == 0
    figs = tmp_path / "results" / "figures"
    assert (figs / "method_reward.png").is_file() and (figs / "label_balance.pdf").is_file()
    assert "prm_exp/method1_SE/metrics.json" in (figs / "README.md").read_text()
    with pytest.raises(SystemExit, match="error: --only: unknown figure maker"):
        main(["--only", "no_such_figure"])
    assert "method_reward" in load_all().names() and (REPO_ROOT / "exp" / "make_figures.py").is_file()
