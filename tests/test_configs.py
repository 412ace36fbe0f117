"""Every YAML config under exp/configs/ parses, validates and dry-runs through its script's one
entry path; a dry run writes nothing under results."""

import importlib
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from prm.config import parse
from prm.io import REPO_ROOT

CONFIGS = REPO_ROOT / "exp" / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*.yaml"))
# DreamPRM's dry run loads and encodes its data with MiniLM (to count rows lost to truncation): slow
CASES = [pytest.param(p, marks=pytest.mark.slow) if p.parent.name == "dreamprm_minif2f" else p for p in ALL]
# configs that need what no offline machine has, with the reason
NEEDS_MORE = {"dreamprm_minif2f/paper.yaml": "Qwen2.5-Math-PRM-7B from the hub and DreamPRM's own JSONL files (GPU, internet)",
              "rl_grpo/gpu.yaml": "bf16 GRPO training, which TRL's arguments accept only on a GPU"}


def _id(p: Path) -> str:
    return p.relative_to(CONFIGS).as_posix()


def test_every_script_has_configs_or_is_flag_only():
    scripts = {p.stem for p in (REPO_ROOT / "exp").glob("*.py")}
    assert {p.relative_to(CONFIGS).parts[0] for p in ALL} <= scripts  # a config folder is named after its script


@pytest.mark.parametrize("path", CASES, ids=_id)
def test_config_dry_runs(path, tmp_path, monkeypatch):
    rel = _id(path)
    if rel in NEEDS_MORE:
        pytest.skip(NEEDS_MORE[rel])
    values = yaml.safe_load(path.read_text()) or {}
    results = tmp_path / "results"
    if rel.startswith("offline_study/variants/"):
        # a variant recipe of the offline study: train_prm settings, read after _common.yaml
        from prm.recipes import TRAIN_TYPES

        common = ["--config", str(path.parent / "_common.yaml")] if path.name != "_common.yaml" else []
        ra, data, model, args = parse(TRAIN_TYPES, [*common, "--config", str(path), "--results_dir", str(results)])
        assert data.format == "stepwise" and args.max_length == 256
        return
    script = importlib.import_module(f"exp.{path.parent.relative_to(CONFIGS).parts[0]}")
    argv = ["--config", str(path), "--dry_run"]
    if any(f.name == "results_dir" for t in script.TYPES for f in fields(t)):
        argv += ["--results_dir", str(results)]
    for key in ("model", "prm"):
        model = values.get(key)
        if isinstance(model, str) and model.startswith("results/") and not (REPO_ROOT / model).exists():
            # the PRM it names is trained by another config (models are not committed): the embedded
            # backbone stands in
            argv += [f"--{key}", "minilm"]
    try:
        script.cli(argv)
    except SystemExit as e:
        msg = str(e)
        if "PRM_DATA_DIR" in msg or "data/offline_study" in msg or "data/prm_exp" in msg or "data/label_quality" in msg:
            pytest.skip(f"its data is not here: {msg}")
        raise
    assert not results.exists(), "a dry run wrote under results"


@pytest.mark.slow
def test_dreamprm_dry_run_leaves_committed_results_alone(monkeypatch):
    # it used to replace results/dreamprm_minif2f/offline_reweighted/metrics.json with a stub
    from exp.dreamprm_minif2f import cli

    monkeypatch.chdir(REPO_ROOT)
    tree = REPO_ROOT / "results" / "dreamprm_minif2f"
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    try:
        out = cli(["--config", str(CONFIGS / "dreamprm_minif2f" / "offline.yaml"), "--dry_run"])
    except SystemExit as e:  # the committed run was written with other settings: refused, nothing written
        assert "choose another --run_name" in str(e)
    else:
        assert out["dry_run"]
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
