"""Every YAML config under exp/configs/ parses, validates and dry-runs through its script's one
entry path; a dry run writes nothing under results."""

import importlib
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

from prm.config import ConfigError, DeviceArgs, load_yaml, parse
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
    script = None if rel.startswith("offline_study/variants/") else importlib.import_module(f"exp.{path.parent.relative_to(CONFIGS).parts[0]}")
    if rel in NEEDS_MORE:
        # it cannot run here, but every key it sets is still one of its script's options
        load_yaml(path, {f.name for t in script.TYPES for f in fields(t)})
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


# --- DeviceArgs: where a model runs and in which dtype, one pair of flags in every script ---------

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA refuses")


@pytest.mark.parametrize("dtype, name, torch_dtype", [
    ("bf16", "bf16", torch.bfloat16), ("bfloat16", "bf16", torch.bfloat16), ("fp32", "fp32", torch.float32),
    ("float32", "fp32", torch.float32), ("FP32", "fp32", torch.float32),
])
def test_device_args_dtype_spellings(dtype, name, torch_dtype):
    d = DeviceArgs(device="cpu", dtype=dtype)
    assert (d.dtype, d.torch_dtype(), d.torch_device()) == (name, torch_dtype, torch.device("cpu"))


def test_device_args_fp16_and_cuda_indices_parse():
    # fp16 with a named CUDA device is valid settings (a config for a GPU machine parses anywhere)
    d = DeviceArgs(device="cuda:1", dtype="float16")
    assert (d.device, d.dtype, d.torch_dtype()) == ("cuda:1", "fp16", torch.float16)
    assert DeviceArgs(device="CUDA").device == "cuda"


def test_device_args_auto_follows_the_machine():
    d = DeviceArgs()
    gpu = torch.cuda.is_available()
    assert d.torch_device().type == ("cuda" if gpu else "cpu")
    assert d.torch_dtype() == (torch.bfloat16 if gpu else torch.float32)
    assert DeviceArgs(device="cpu").torch_dtype() == torch.float32  # auto on a CPU even where a GPU exists


@pytest.mark.parametrize("kw, message", [
    (dict(device="gpu"), "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (dict(device="cuda:x"), "--device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (dict(device="cuda:-1"), "--device must be auto, cpu, cuda or cuda:N, got 'cuda:-1'"),
    (dict(dtype="fp8"), "--dtype unknown 'fp8'; known: auto, bf16, fp16, fp32, bfloat16, float16, float32"),
    (dict(dtype="half"), "--dtype unknown 'half'"),
    (dict(device="cpu", dtype="fp16"), "--dtype fp16 needs a CUDA device (--device cpu); use bf16 or fp32 on a CPU"),
])
def test_device_args_bad_values_name_the_flag(kw, message):
    with pytest.raises(ConfigError) as e:
        DeviceArgs(**kw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@NO_GPU
def test_device_args_refuses_a_gpu_this_machine_lacks():
    with pytest.raises(ConfigError, match=r"^--dtype fp16 needs a CUDA device \(--device auto and none here\)"):
        DeviceArgs(dtype="fp16")
    for device in ("cuda", "cuda:0"):
        d = DeviceArgs(device=device, dtype="bf16")  # parses (a GPU config) ...
        with pytest.raises(ConfigError, match=rf"^--device {device}: no CUDA device here; use cpu or auto"):
            d.torch_device()  # ... but cannot run here


@NO_GPU
def test_evaluate_on_a_missing_gpu_is_one_line_and_writes_nothing(tmp_path):
    from exp.evaluate import cli

    sample = str(REPO_ROOT / "data" / "sample_stepwise.jsonl")
    with pytest.raises(SystemExit, match=r"^error: --device cuda: no CUDA device here"):
        cli(["--model", "minilm", "--task", "steps", "--data", sample, "--format", "stepwise", "--device", "cuda",
             "--results_dir", str(tmp_path / "results")])
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("script, dtype", [("evaluate", "auto"), ("serve_prm", "auto"), ("dreamprm_minif2f", "fp32")])
def test_scripts_share_the_device_flags(script, dtype, tmp_path):
    # one --device and one --dtype per script, from YAML or flags (torch's names too); DreamPRM's
    # bilevel loop keeps its fp32 default, the others follow the machine
    from dataclasses import fields as fields_of

    types = importlib.import_module(f"exp.{script}").TYPES
    names = [f.name for t in types for f in fields_of(t)]
    assert "precision" not in names and "bf16" not in names
    assert sum(issubclass(t, DeviceArgs) for t in types) == 1
    required = {"evaluate": ["--model", "minilm", "--task", "best_of_n"], "serve_prm": ["--model", "minilm"]}.get(script, [])
    dev = next(g for g in parse(types, required) if isinstance(g, DeviceArgs))
    assert (dev.device, dev.dtype) == ("auto", dtype)
    cfg = tmp_path / "dev.yaml"
    cfg.write_text("device: cpu\ndtype: bfloat16\n")
    dev = next(g for g in parse(types, [*required, "--config", str(cfg)]) if isinstance(g, DeviceArgs))
    assert (dev.device, dev.dtype, dev.torch_dtype()) == ("cpu", "bf16", torch.bfloat16)
    dev = next(g for g in parse(types, [*required, "--config", str(cfg), "--dtype", "float32"]) if isinstance(g, DeviceArgs))
    assert dev.dtype == "fp32"
    with pytest.raises(SystemExit, match=r"^error: --dtype unknown 'int8'"):
        parse(types, [*required, "--dtype", "int8"])


def test_load_prm_takes_the_same_dtype_names(tmp_path):
    # the library loader reads the spellings --dtype takes, with the same meaning of auto
    from prm.models.prm import PRM, PRMSpec, load_prm

    PRM.from_backbone("minilm", PRMSpec()).save(tmp_path / "prm")
    assert next(load_prm(str(tmp_path / "prm"), torch_dtype="bfloat16").model.parameters()).dtype == torch.bfloat16
    auto = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    assert next(load_prm(str(tmp_path / "prm"), torch_dtype="auto", device="auto").model.parameters()).dtype == auto
    with pytest.raises(ValueError, match="unknown dtype 'int8'; known: auto, bf16, fp16, fp32"):
        load_prm(str(tmp_path / "prm"), torch_dtype="int8")
