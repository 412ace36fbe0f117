"""Shared pieces of the benchmarks: the GSM8K stepwise data, machine description, statistics of
alternated runs, and writing ``results/bench/<name>.json``."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prm.io import git_sha, library_versions, write_json


def gsm8k_rows(path: str, n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """TRL-format stepwise rows (``prompt``, ``completions``, ``labels`` as bools) from GSM8K
    reference solutions plus injected errors (`prm.data.inject`), cut after the wrong step so
    every step carries a label (TRL cannot express unlabeled steps). Held-out rows come from
    other problems than the training rows."""
    import random

    from prm.data import load, to_trl

    ds = load("gsm8k_errors", path)
    by_problem: dict[str, list[dict]] = {}
    for rec in ds:
        by_problem.setdefault(rec["prompt"], []).append(rec)
    problems = sorted(by_problem)
    random.Random(seed).shuffle(problems)
    train: list[dict] = []
    held: list[dict] = []
    for p in problems:
        target = train if len(train) < n_train else held
        if target is held and len(held) >= n_eval:
            break
        for rec in by_problem[p]:
            row = to_trl(rec)
            target.append({"prompt": row["prompt"], "completions": row["completions"], "labels": [bool(v) for v in row["labels"]]})
    return train[:n_train], held[:n_eval]


def write_rows(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def machine() -> dict:
    """What the numbers were measured on (no paths, no host names)."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        info["cpu_bf16"] = "avx512_bf16" in flags or "amx_bf16" in flags
        info["cpu_amx"] = "amx_bf16" in flags
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["device"] = "cuda"
    else:
        info["device"] = "cpu"
    return info


def spread(values: Sequence[float]) -> dict:
    """Median, min, max and relative spread ((max - min) / median) of repeated measurements."""
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "rel_spread": None, "n": 0}
    med = statistics.median(v)
    return {"median": med, "min": min(v), "max": max(v), "rel_spread": (max(v) - min(v)) / med if med else None, "n": len(v), "values": list(v)}


def save(results_dir: str | Path, name: str, payload: dict, note: str = "") -> Path:
    """Write ``<results_dir>/bench/<name>.json`` with the machine, versions and git SHA."""
    out = Path(results_dir) / "bench" / f"{name}.json"
    write_json(out, {"benchmark": name, "note": note, "machine": machine(), "versions": library_versions(), "git_sha": git_sha(), **payload})
    return out


def tiny_backbone(kind: str, out: Path, tokenizer: str = "minilm") -> Path:
    """A folder with a tiny randomly initializable ``bert`` or ``llama`` config and the embedded
    MiniLM tokenizer: real models for the ``--smoke`` runs, built in a second."""
    from transformers import AutoTokenizer, BertConfig, LlamaConfig

    from prm.models.backbones import resolve

    tok = AutoTokenizer.from_pretrained(resolve(tokenizer))
    out.mkdir(parents=True, exist_ok=True)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, pad_token_id=tok.pad_token_id)
    cfg = BertConfig(**common) if kind == "bert" else LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=2048)
    cfg.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def llama_1b_dir(out: Path, tokenizer: str = "smollm2") -> Path:
    """A Llama-3.2-1B-shaped config (16 layers, hidden 2048, GQA 32/8 heads, 128256 vocab) with
    the SmolLM2 tokenizer (its ids fit the vocabulary): randomly initialized on the GPU."""
    from transformers import AutoTokenizer, LlamaConfig

    from prm.models.backbones import resolve

    tok = AutoTokenizer.from_pretrained(resolve(tokenizer))
    out.mkdir(parents=True, exist_ok=True)
    LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                head_dim=64, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    return out
