"""Training speed over whole epochs: this project's PRMTrainer against TRL's PRMTrainer
(``trl==1.12.0``, the last release with ``trl.experimental.prm``) at its fastest settings, run in an
isolated environment that this module creates, so the project's own requirements never include trl.

Protocol (the defaults; ``python exp/bench.py train``): per backbone the same TRL-format GSM8K rows
(1,000), batch size (8), learning rate and seed; each run trains exactly one epoch
(steps = ceil(rows / batch)) and its examples/s and tokens/s are the epoch's rows and real tokens
over the wall time from the start of training to the last optimizer step (``warmup`` = 0: nothing
is left out). Each run is its own process (cold start, its own peak RSS). TRL gets every switch its
user has: the faster precision (bf16 autocast, CPU: ``use_cpu``; or fp32 where the CPU has no bf16
instructions and bf16 runs on slow fallback kernels: ``precision`` / ``trl_precision``, default
``auto`` = bf16 on a GPU or a CPU with bf16 instructions, fp32 elsewhere, the same policy as this
project's defaults), no gradient checkpointing, the attention kernel, and
transformers' length-grouped batches (``train_sampling_strategy="group_by_length"``, this project's
default too: without it TRL pads ~40% of its tokens instead of ~5%); both eager and sdpa run in every
round (``--trl_sampling group_by_length,random`` adds TRL's default random batches,
``--trl_precision bf16,fp32`` both precisions) and "TRL best" is
the one with the higher median examples/s (``trl_best`` holds a copy of its runs; all are recorded).
Runs alternate ours, TRL eager, TRL sdpa,
ours, ... for ``pairs`` rounds; ratios are taken within a round and summarised by median and range,
so slow drifts of a shared machine hit both sides. The load average is recorded per round, and each
run's process CPU time too: on a busy machine (run with ``OMP_NUM_THREADS=1`` there; two OpenMP
threads stall on oversubscribed cores) ``examples_per_cpu_s`` is the steadier comparison, while on
a quiet one the wall-clock examples/s is the figure a user feels.

``epoch_examples_per_s`` in a run's record (tokens/s divided by the mean row length) is a secondary
estimate kept for short runs (``--steps``); the summaries and ratios use the measured epoch.
"""

from __future__ import annotations

import json
import logging
import math
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
    n_train: PerName = field(default_factory=lambda: PerName({"minilm": 1000, "smollm2": 1000}), metadata={"help": "Stepwise GSM8K training rows (reference + injected-error copies), per backbone (a mapping / name=n,..., or one number); each side trains one epoch over them."})
    n_eval: PerName = field(default_factory=lambda: PerName({"minilm": 100, "smollm2": 40}), metadata={"help": "Held-out rows (other problems) for step accuracy, per backbone (a mapping / name=n,..., or one number)."})
    steps: PerName = field(default=0, metadata={"help": "Optimizer steps per backbone (name=steps,... or one number); 0 or absent: one whole epoch, ceil(n_train / batch_size)."})
    batch_size: PerName = field(default_factory=lambda: PerName({"minilm": 8, "smollm2": 8}), metadata={"help": "Batch size per backbone (a mapping / name=n,..., or one number)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate (both systems)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per row (both systems)."})
    pairs: int = field(default=3, metadata={"help": "Alternation rounds (ours, TRL eager, TRL sdpa[, TRL defaults]) per backbone."})
    defaults_rounds: PerName = field(default=0, metadata={"help": "Rounds that also run TRL at its defaults (fp32 + gradient checkpointing: slow), per backbone; default none."})
    trl_attention: list[str] = field(default_factory=lambda: ["eager", "sdpa"], metadata={"help": "Attention kernels TRL best is chosen from (each runs every round)."})
    trl_sampling: list[str] = field(default_factory=lambda: ["group_by_length"], metadata={"help": "Batch samplers TRL best is chosen from (transformers' train_sampling_strategy: "
                                                                                               "group_by_length, random); each runs with every attention kernel. "
                                                                                               "group_by_length is this project's default too; random was TRL's default."})
    precision: str = field(default="auto", metadata={"help": "This project's precision: auto (bf16 on a GPU or a CPU with bf16 instructions, "
                                                   "else fp32: prm.device.bf16_default), bf16 or fp32."})
    trl_precision: list[str] = field(default_factory=lambda: ["auto"], metadata={"help": "Precisions TRL best is chosen from (auto, bf16, fp32; each runs with every "
                                                                                 "attention kernel and sampler). auto: as --precision auto."})
    warmup: int = field(default=0, metadata={"help": "Optimizer steps left out of the throughput (0: the whole epoch counts, start-up included)."})
    bf16_master_weights: bool = field(default=True, metadata={"help": "This project: bf16 weights + fp32 masters instead of autocast (PRMTrainingArguments)."})
    freeze_embeddings: bool = field(default=False, metadata={"help": "This project: leave the input embeddings untrained (a modelling choice; PRMTrainingArguments)."})
    last_layer_at_labels: bool = field(default=True, metadata={"help": "This project: an encoder's last layer at labeled positions only (PRMTrainingArguments; "
                                                                       "false: the full last layer, for an A/B)."})
    share_prefix: bool | None = field(default=None, metadata={"help": "This project: a problem's rows share their common prefix (PRMTrainingArguments."
                                                               "share_prefix); unset: the trainer's default, on for causal backbones "
                                                               "(encoders cannot share); false: off."})
    random_init: bool = field(default=False, metadata={"help": "Random weights from the backbone's config (GPU run: a Llama-3.2-1B shape)."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer path when the backbone folder holds only a config."})
    profile: list[str] = field(default_factory=lambda: ["minilm"], metadata={"help": "Backbones (or all) that get one extra profiled run per system (torch.profiler top operators); none: an empty list."})
    trl_python: str | None = field(default=None, metadata={"help": "Python with trl==1.12.0; default: create .bench/trl-venv."})
    attn_implementation: str = field(default="auto", metadata={"help": "This project's attention kernel while training (auto, eager, sdpa; see PRMTrainingArguments). TRL keeps its own."})
    trl: bool = field(default=True, metadata={"help": "Run the TRL side (--smoke turns it off when no TRL environment exists yet)."})
    seed: int = 0

    def __post_init__(self) -> None:
        self.backbones, self.profile, self.trl_attention = split_list(self.backbones), split_list(self.profile), split_list(self.trl_attention)
        self.trl_sampling, self.trl_precision = split_list(self.trl_sampling), split_list(self.trl_precision)
        require(self.precision in ("auto", "bf16", "fp32"), "precision", f"must be auto, bf16 or fp32, got {self.precision!r}")
        require(bool(self.trl_precision) and set(self.trl_precision) <= {"auto", "bf16", "fp32"}, "trl_precision",
                f"must be auto, bf16 and/or fp32, got {self.trl_precision}")
        require(bool(self.trl_attention) and set(self.trl_attention) <= {"eager", "sdpa"}, "trl_attention", f"must be eager and/or sdpa, got {self.trl_attention}")
        require(bool(self.trl_sampling) and set(self.trl_sampling) <= {"group_by_length", "random"}, "trl_sampling",
                f"must be group_by_length and/or random, got {self.trl_sampling}")
        for name in ("n_train", "n_eval", "steps", "batch_size", "defaults_rounds"):
            value = getattr(self, name)
            value = value if isinstance(value, (int, float)) else PerName(value)
            values = list(value.values()) if isinstance(value, dict) else [value]
            require(all(isinstance(v, int) and v >= 0 for v in values), name, f"must be a count or name=count,... per backbone, got {value!r}")
            setattr(self, name, value)
        at_least(self, ("pairs",))
        n_train = list(self.n_train.values()) if isinstance(self.n_train, dict) else [self.n_train]
        require(all(n >= 1 for n in n_train), "n_train", f"must be >= 1, got {self.n_train!r}")
        at_least(self, ("warmup",), 0)


_per = per_name


def bf16_of(precision: str) -> bool:
    """``auto`` resolves to this machine's default (prm.device.bf16_default)."""
    if precision == "auto":
        from prm.device import bf16_default

        return bf16_default()
    return precision == "bf16"


def trl_variants(cfg: TrainBench) -> dict[str, tuple[str, str, bool]]:
    """TRL "best" candidates by run name -> (attention, sampler, bf16): trl_<attention>, with _random when
    the sampler is not length-grouped and _fp32 when not in bf16."""
    bf16s = list(dict.fromkeys(bf16_of(p) for p in cfg.trl_precision))
    return {f"trl_{a}" + ("" if s == "group_by_length" else f"_{s}") + ("" if b else "_fp32"): (a, s, b)
            for b in bf16s for a in cfg.trl_attention for s in cfg.trl_sampling}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def train_benchmark(cfg: TrainBench, data_path: str, work: Path) -> dict:
    import torch

    from prm.models.backbones import resolve

    from .measure import matmul_peak

    work.mkdir(parents=True, exist_ok=True)
    names = list(cfg.backbones)
    keys = [Path(n).name for n in names]
    n_eval = {k: _per(cfg.n_eval, k) for k in keys}
    n_train = {k: _per(cfg.n_train, k) for k in keys}
    train, held = gsm8k_rows(data_path, max(n_train.values()), max(n_eval.values()), cfg.seed)
    trl_py = (cfg.trl_python or ensure_trl_python(REPO_ROOT / ".bench" / "trl-venv")) if cfg.trl else None
    ours_cmd = [sys.executable, "-m", "exp.benchmarks.ours_runner"]
    trl_cmd = [trl_py, str(HERE / "trl_runner.py")] if trl_py else None
    out: dict[str, Any] = {"data": {"source": "GSM8K train, gsm8k_errors (cut after the wrong step)", "n_train": n_train, "n_eval": n_eval,
                                    "train_steps_labeled": {k: sum(len(r["labels"]) for r in train[:n]) for k, n in n_train.items()},
                                    # accuracy of always answering "correct": a short run that only learns the prior lands here
                                    "eval_majority_accuracy": {k: sum(v for r in held[:n] for v in r["labels"]) / max(1, sum(len(r["labels"]) for r in held[:n])) for k, n in n_eval.items()}},
           "protocol": {"whole_epoch": not any(_per(cfg.steps, k) for k in keys), "warmup_steps_excluded": cfg.warmup, "pairs": cfg.pairs,
                        "trl_attention": cfg.trl_attention, "trl_sampling": cfg.trl_sampling, "ours_bf16": bf16_of(cfg.precision),
                        "trl_bf16": sorted({b for _, _, b in trl_variants(cfg).values()}),
                        "order": ["ours", *trl_variants(cfg), "trl_defaults (if any)"]},
           "load_average_before": load_average(), "backbones": {}}
    for name, key in zip(names, keys):
        tf = write_rows(work / f"train_{key}.jsonl", train[: n_train[key]])
        ef = write_rows(work / f"eval_{key}.jsonl", held[: n_eval[key]])  # the first n held-out rows
        bs = _per(cfg.batch_size, key)
        steps = _per(cfg.steps, key) or math.ceil(n_train[key] / bs)  # one whole epoch unless told
        spec = {"model": resolve(name), "tokenizer": cfg.tokenizer, "random_init": cfg.random_init, "train_file": str(tf), "eval_file": str(ef),
                "steps": steps, "batch_size": bs, "learning_rate": cfg.learning_rate, "n_train": n_train[key],
                "max_length": cfg.max_length, "seed": cfg.seed, "warmup": cfg.warmup, "eval_batch_size": 32, "profile": False,
                "attn_implementation": cfg.attn_implementation, "bf16_master_weights": cfg.bf16_master_weights, "freeze_embeddings": cfg.freeze_embeddings,
                "last_layer_at_labels": cfg.last_layer_at_labels,
                "share_prefix": cfg.share_prefix}
        ours_mode = "bf16" if bf16_of(cfg.precision) else "fp32"
        n_def = _per(cfg.defaults_rounds, key)
        variants = trl_variants(cfg)
        trl_names = list(variants)
        runs: dict[str, list[dict]] = {"ours": [], **{t: [] for t in trl_names}, "trl_defaults": []}
        loads = []
        dtypes = sorted({bf16_of(cfg.precision), *(b for _, _, b in variants.values())})
        peaks = {b: [matmul_peak(torch.bfloat16 if b else torch.float32)] for b in dtypes}  # this parent's threads = the runs'

        for i in range(cfg.pairs):  # A B C A B C ...
            loads.append(load_average())
            runs["ours"].append(run_child(ours_cmd, dict(spec, mode=ours_mode), work, f"{key}_ours_{i}"))
            if trl_cmd is None:
                continue
            for t, (attn, sampling, bf16) in variants.items():
                runs[t].append(run_child(trl_cmd, dict(spec, mode="best", trl_attn=attn, trl_sampling=sampling, trl_bf16=bf16), work, f"{key}_{t}_{i}"))
            if i < n_def:
                runs["trl_defaults"].append(run_child(trl_cmd, dict(spec, mode="defaults"), work, f"{key}_trl_defaults_{i}"))
            log.info("%s round %d: ours %.2f ex/s, %s", key, i, runs["ours"][-1]["examples_per_s"],
                     ", ".join(f"{t} {runs[t][-1]['examples_per_s']:.2f}" for t in trl_names))
        loads.append(load_average())
        for b in dtypes:
            peaks[b].append(matmul_peak(torch.bfloat16 if b else torch.float32))
        for r in (r for rs in runs.values() for r in rs):  # MFU: the run's model FLOP/s over the best peak of its dtype around the rounds
            r["mfu"] = r["model_flops_per_s"] / max(peaks[bool(r["bf16"])]) if r.get("model_flops_per_s") else None
        res: dict[str, Any] = {"spec": {k: v for k, v in spec.items() if k not in ("train_file", "eval_file", "model")}, "model": name,
                               "load_average_per_round": loads,
                               "matmul_peak_flops_per_s": {("bf16" if b else "fp32"): {"before": v[0], "after": v[1]} for b, v in peaks.items()}}
        if trl_cmd is not None:
            # TRL best: the attention kernel with the higher median whole-run examples/s in this run
            best = max(trl_names, key=lambda t: spread([r["examples_per_s"] for r in runs[t]])["median"])
            runs["trl_best"] = runs[best]
            res["trl_best_is"] = best
        res["runs"] = {k: v for k, v in runs.items() if v}
        metrics = ("examples_per_s", "tokens_per_s", "examples_per_cpu_s", "train_seconds", "cpu_seconds", "padding_fraction", "positions_per_token", "peak_rss_mb", "step_accuracy", "peak_gpu_mb",
                   "model_flops_per_s", "mfu")
        res["summary"] = {sysname: {m: spread([r.get(m) for r in rs]) for m in metrics} for sysname, rs in res["runs"].items()}
        ratios = {}
        for other in [*trl_names, "trl_best", "trl_defaults"]:
            k = len(runs.get(other, []))
            if k:
                ratios[f"ours_vs_{other}"] = {m: spread([runs["ours"][i][m] / runs[other][i][m] for i in range(k) if runs["ours"][i].get(m) and runs[other][i].get(m)])
                                              for m in ("examples_per_s", "tokens_per_s", "examples_per_cpu_s")}
        if runs["trl_defaults"] and "trl_best" in runs:
            ratios["trl_best_vs_trl_defaults"] = {"examples_per_s": spread([runs["trl_best"][i]["examples_per_s"] / runs["trl_defaults"][i]["examples_per_s"] for i in range(len(runs["trl_defaults"]))])}
        res["ratios"] = ratios
        if trl_cmd is not None and ("all" in cfg.profile or key in cfg.profile):
            pspec = dict(spec, profile=True, steps=min(spec["steps"], 4), warmup=1)
            attn, sampling, bf16 = variants[res["trl_best_is"]]
            res["profile"] = {"ours": run_child(ours_cmd, dict(pspec, mode=ours_mode), work, f"{key}_ours_profile")["profile_top"],
                              "trl_best": run_child(trl_cmd, dict(pspec, mode="best", trl_attn=attn, trl_sampling=sampling, trl_bf16=bf16),
                                                    work, f"{key}_trl_profile")["profile_top"]}
        out["backbones"][key] = res
    out["load_average_after"] = load_average()
    return out
