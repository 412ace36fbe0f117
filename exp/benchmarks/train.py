"""Training speed: this project's PRMTrainer against TRL's PRMTrainer (``trl==1.12.0``, the last
release with ``trl.experimental.prm``), run in an isolated environment that this module creates,
so the project's own requirements never include trl.

Protocol: the same backbone, the same TRL-format rows, the same batch size, learning rate, number
of optimizer steps and seed. Each run is its own process (cold start, its own peak RSS). Runs
alternate ours, TRL best, TRL defaults, ours, ... for ``pairs`` rounds; ratios are taken within a
round and summarised by their median and spread, so slow drifts of a shared machine hit both sides.

Caveat of a fixed number of steps: the samplers draw different rows. This project's length-grouped
sampler starts with the longest rows (transformers puts the longest batch first), so in a short
run its raw examples/s understates it, while its tokens/s (and ``epoch_examples_per_s``, derived
from it) overstate it, since the fixed per-step work (optimizer, dtype casts) is spread over more
tokens. Compare ``padded_tokens`` too; a full epoch (``--n_train`` = steps x batch) removes the bias.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prm.config import PerName, at_least, per_name, require, split_list
from prm.io import REPO_ROOT

from .common import gsm8k_rows, spread, write_rows

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Pinned like the project's own requirements, so both sides run the same torch/transformers.
TRL_PINS = ("torch==2.13.0", "trl==1.12.0", "transformers==5.23.0", "tokenizers==0.23.3", "datasets==5.2.0",
            "accelerate==1.15.0", "safetensors==0.8.0", "numpy==2.4.6", "huggingface-hub==2.4.0")


def ensure_trl_python(venv: str | Path) -> str:
    """The Python of an isolated environment holding TRL 1.12.0; created on first use
    (``python -m venv`` + pinned ``pip install``, about a minute with the local torch wheel)."""
    venv = Path(venv)
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import trl.experimental.prm, trl; assert trl.__version__ == '1.12.0'"]
    if py.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(py)
    log.info("creating the isolated TRL environment in %s (once)", venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", *TRL_PINS], capture_output=True, text=True)
    if res.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        raise RuntimeError(f"could not install {' '.join(TRL_PINS)} into {venv}:\n{res.stderr[-2000:]}")
    return str(py)


def run_child(cmd: list[str], spec: dict, work: Path, name: str, timeout: int = 1800) -> dict:
    """Run one measured process with ``spec`` and return the JSON it wrote."""
    spec = dict(spec, out=str(work / f"{name}.out.json"))
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    res = subprocess.run([*cmd, str(spec_path)], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(Path(spec["out"]).read_text())


@dataclass
class TrainBench:
    backbones: list[str] = field(default_factory=lambda: ["minilm", "smollm2"], metadata={"help": "Backbones (embedded names, paths or hub ids)."})
    n_train: int = field(default=1000, metadata={"help": "Stepwise GSM8K training rows (reference + injected-error copies)."})
    n_eval: PerName = field(default_factory=lambda: PerName({"minilm": 100, "smollm2": 40}), metadata={"help": "Held-out rows (other problems) for step accuracy, per backbone (a mapping / name=n,..., or one number)."})
    steps: PerName = field(default_factory=lambda: PerName({"minilm": 10, "smollm2": 4}), metadata={"help": "Optimizer steps per backbone (a mapping / name=steps,..., or one number for all)."})
    batch_size: PerName = field(default_factory=lambda: PerName({"minilm": 8, "smollm2": 4}), metadata={"help": "Batch size per backbone (a mapping / name=n,..., or one number)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (both systems)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per row (both systems)."})
    pairs: int = field(default=3, metadata={"help": "Alternation rounds (ours, TRL best, TRL defaults) per backbone."})
    defaults_rounds: PerName = field(default_factory=lambda: PerName({"minilm": 3, "smollm2": 1}), metadata={"help": "Rounds that include TRL at its defaults (fp32 + checkpointing is slow), per backbone."})
    warmup: int = field(default=2, metadata={"help": "Optimizer steps excluded from the throughput (allocator and thread warm-up)."})
    random_init: bool = field(default=False, metadata={"help": "Random weights from the backbone's config (GPU run: a Llama-3.2-1B shape)."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer path when the backbone folder holds only a config."})
    profile: list[str] = field(default_factory=lambda: ["minilm"], metadata={"help": "Backbones (or all) that get one extra profiled run per system (torch.profiler top operators); none: an empty list."})
    trl_python: str | None = field(default=None, metadata={"help": "Python with trl==1.12.0; default: create .bench/trl-venv."})
    attn_implementation: str = field(default="auto", metadata={"help": "This project's attention kernel while training (auto, eager, sdpa; see PRMTrainingArguments). TRL keeps its own."})
    trl: bool = field(default=True, metadata={"help": "Run the TRL side (--smoke turns it off when no TRL environment exists yet)."})
    seed: int = 0

    def __post_init__(self) -> None:
        self.backbones, self.profile = split_list(self.backbones), split_list(self.profile)
        for name in ("n_eval", "steps", "batch_size", "defaults_rounds"):
            value = getattr(self, name)
            value = value if isinstance(value, (int, float)) else PerName(value)
            values = list(value.values()) if isinstance(value, dict) else [value]
            require(all(isinstance(v, int) and v >= 0 for v in values), name, f"must be a count or name=count,... per backbone, got {value!r}")
            setattr(self, name, value)
        at_least(self, ("n_train", "pairs"))
        at_least(self, ("warmup",), 0)


_per = per_name


def train_benchmark(cfg: TrainBench, data_path: str, work: Path) -> dict:
    from prm.models.backbones import resolve

    work.mkdir(parents=True, exist_ok=True)
    names = list(cfg.backbones)
    n_eval = {Path(n).name: _per(cfg.n_eval, Path(n).name) for n in names}
    train, held = gsm8k_rows(data_path, cfg.n_train, max(n_eval.values()), cfg.seed)
    tf = write_rows(work / "train.jsonl", train)
    trl_py = (cfg.trl_python or ensure_trl_python(REPO_ROOT / ".bench" / "trl-venv")) if cfg.trl else None
    ours_cmd = [sys.executable, "-m", "exp.benchmarks.ours_runner"]
    trl_cmd = [trl_py, str(HERE / "trl_runner.py")] if trl_py else None
    out: dict[str, Any] = {"data": {"source": "GSM8K train, gsm8k_errors (cut after the wrong step)", "n_train": len(train), "n_eval": n_eval,
                                    "train_steps_labeled": sum(len(r["labels"]) for r in train),
                                    # accuracy of always answering "correct": a short run that only learns the prior lands here
                                    "eval_majority_accuracy": {k: sum(v for r in held[:n] for v in r["labels"]) / max(1, sum(len(r["labels"]) for r in held[:n])) for k, n in n_eval.items()}},
           "backbones": {}}
    for name in names:
        key = Path(name).name
        ef = write_rows(work / f"eval_{key}.jsonl", held[: n_eval[key]])  # the first n held-out rows
        spec = {"model": resolve(name), "tokenizer": cfg.tokenizer, "random_init": cfg.random_init, "train_file": str(tf), "eval_file": str(ef),
                "steps": _per(cfg.steps, key), "batch_size": _per(cfg.batch_size, key), "learning_rate": cfg.learning_rate,
                "max_length": cfg.max_length, "seed": cfg.seed, "warmup": cfg.warmup, "eval_batch_size": 32, "profile": False,
                "attn_implementation": cfg.attn_implementation}
        n_def = _per(cfg.defaults_rounds, key)
        runs: dict[str, list[dict]] = {"ours": [], "trl_best": [], "trl_defaults": []}
        for i in range(cfg.pairs):  # A B C A B C ...
            runs["ours"].append(run_child(ours_cmd, dict(spec, mode="bf16"), work, f"{key}_ours_{i}"))
            if trl_cmd is None:
                continue
            runs["trl_best"].append(run_child(trl_cmd, dict(spec, mode="best"), work, f"{key}_trl_best_{i}"))
            if i < n_def:
                runs["trl_defaults"].append(run_child(trl_cmd, dict(spec, mode="defaults"), work, f"{key}_trl_defaults_{i}"))
            log.info("%s round %d: ours %.2f ex/s, TRL best %.2f ex/s", key, i, runs["ours"][-1]["examples_per_s"], runs["trl_best"][-1]["examples_per_s"])
        res: dict[str, Any] = {"spec": {k: v for k, v in spec.items() if k not in ("train_file", "eval_file", "model")}, "model": name, "runs": runs}
        summary = {}
        for sysname, rs in runs.items():
            if not rs:
                continue
            summary[sysname] = {m: spread([r.get(m) for r in rs]) for m in ("examples_per_s", "epoch_examples_per_s", "tokens_per_s", "padding_fraction", "peak_rss_mb", "step_accuracy", "peak_gpu_mb")}
        res["summary"] = summary
        ratios = {}
        for other in ("trl_best", "trl_defaults"):
            k = len(runs[other])
            ratios[f"ours_vs_{other}"] = {
                "examples_per_s": spread([runs["ours"][i]["examples_per_s"] / runs[other][i]["examples_per_s"] for i in range(k)]),
                "tokens_per_s": spread([runs["ours"][i]["tokens_per_s"] / runs[other][i]["tokens_per_s"] for i in range(k)]),
                # the fair one for short runs: whole-epoch examples/s from each side's token rate
                "epoch_examples_per_s": spread([runs["ours"][i]["epoch_examples_per_s"] / runs[other][i]["epoch_examples_per_s"] for i in range(k)]),
            }
        ratios["trl_best_vs_trl_defaults"] = {"examples_per_s": spread([runs["trl_best"][i]["examples_per_s"] / runs["trl_defaults"][i]["examples_per_s"] for i in range(len(runs["trl_defaults"]))])}
        res["ratios"] = ratios
        if trl_cmd is not None and ("all" in cfg.profile or key in cfg.profile):
            pspec = dict(spec, profile=True, steps=min(spec["steps"], 4), warmup=1)
            res["profile"] = {"ours": run_child(ours_cmd, dict(pspec, mode="bf16"), work, f"{key}_ours_profile")["profile_top"],
                              "trl_best": run_child(trl_cmd, dict(pspec, mode="best"), work, f"{key}_trl_profile")["profile_top"]}
        out["backbones"][key] = res
    return out
