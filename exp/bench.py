"""Performance benchmarks (issue 7); each writes results/bench/<name>.json and a figure
(python exp/make_figures.py).

    export PRM_DATA_DIR=../shared/data
    python exp/bench.py train        # one whole epoch each: this trainer vs TRL 1.12 PRMTrainer at its best (bf16 where the CPU has it else fp32, no ckpt, faster of eager/sdpa), MiniLM + SmolLM2
    OMP_NUM_THREADS=1 python exp/bench.py train   # the same on a busy shared machine (compare examples_per_cpu_s there)
    python exp/bench.py prefix       # single pass vs the per-prefix layout of the old prm_exp.py (SmolLM2)
    python exp/bench.py score        # best-of-N solutions/s at N=8,16: naive vs shared-prefix KV cache (SmolLM2)
    python exp/bench.py label_cost   # Claude grading: requests, tokens, USD per 1000 solutions (loopback fake API)
    python exp/bench.py efficiency   # MFU of training, fp32 and bf16 (MiniLM)
    python exp/bench.py search       # beam search solutions/s: prefix KV reuse vs recomputing every prefix (SmolLM2)
    python exp/bench.py serve        # scoring server, 16 concurrent clients: requests/s and p95 vs in-process one at a time (MiniLM)
    python exp/bench.py gpu          # on a CUDA machine: train + score with a random Llama-3.2-1B-shaped model, bf16
    python exp/bench.py qlora        # memory: LoRA on fp32 base weights vs QLoRA on 4-bit NF4 (SmolLM2; CPU or GPU)
    python exp/bench.py qlora --activation_checkpointing false --name qlora_no_ckpt   # activations kept: they set the peak
    python exp/bench.py mc_search    # Monte-Carlo labels: binary (OmegaPRM) vs linear first-error search, rollouts per solution (SmolLM2)
    python exp/bench.py <name> --smoke   # seconds, tiny real models (what tests/test_bench.py runs)

The first `train` creates .bench/trl-venv (python -m venv + pinned pip install of trl==1.12.0);
`--trl_python PATH` uses another interpreter that has it. `--help` after a name lists its flags.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

# the harness lives beside this script (exp/benchmarks/) and is imported from exp/
from benchmarks.common import gsm8k_rows, llama_1b_dir, save, tiny_backbone
from benchmarks.qlora import QLoRABench
from benchmarks.train import TrainBench, train_benchmark

from prm.config import at_least, resolve_data, run, split_list
from prm.io import REPO_ROOT

log = logging.getLogger("bench")


@dataclass
class Common:
    smoke: bool = field(default=False, metadata={"help": "Seconds-long run on tiny real models (for the tests)."})
    data: str = field(default="$PRM_DATA_DIR/gsm8k/train.jsonl", metadata={"help": "GSM8K JSONL (train split) the rows come from."})
    results_dir: str = field(default="results", metadata={"help": "Writes <results_dir>/bench/<name>.json."})
    name: str | None = field(default=None, metadata={"help": "Result file name (default: the benchmark's name)."})
    work_dir: str = field(default=".bench/work", metadata={"help": "Scratch folder (gitignored)."})
    note: str = field(default="", metadata={"help": "Free text stored with the result (e.g. how busy the machine was)."})
    dry_run: bool = field(default=False, metadata={"help": "Parse, validate and resolve the data, then exit (runs nothing)."})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "solutions", "problems", "rounds", "pairs"):
            if isinstance(getattr(self, name, None), int):
                at_least(self, (name,))


@dataclass
class TrainConfig(Common, TrainBench):
    def __post_init__(self) -> None:
        TrainBench.__post_init__(self)


@dataclass
class PrefixConfig(Common):
    model: str = "smollm2"
    solutions: int = 24
    batch_size: int = 8
    bf16: bool = True


@dataclass
class ScoreConfig(Common):
    model: str = "smollm2"
    ns: list[int] = field(default_factory=lambda: [8, 16])
    problems: int = 3
    rounds: int = 3
    random_init: bool = False
    dtypes: list[str] = field(default_factory=lambda: ["bf16"], metadata={"help": "Timed precisions, fp32 and/or bf16 (fp32 CPU scoring of SmolLM2 takes minutes); the fp32 score check always runs."})
    kinds: bool = field(default=True, metadata={"help": "Every PRM kind vs its model card's usage (false: the older token_cls best-of-N comparison)."})
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ns = [int(n) for n in split_list(self.ns)]
        self.dtypes = split_list(self.dtypes)


@dataclass
class LabelCostConfig(Common):
    solutions: int = 200
    claude_model: str = "claude-sonnet-4-6"


@dataclass
class EfficiencyConfig(Common):
    model: str = "minilm"
    steps: int = 10
    batch_size: int = 8


@dataclass
class ServeBenchConfig(Common):
    model: str = field(default="minilm", metadata={"help": "PRM backbone (pretrained weights, fresh head: speed only)."})
    clients: int = field(default=16, metadata={"help": "Concurrent client threads (one solution per request)."})
    requests: int = field(default=256, metadata={"help": "Requests per round and scheme."})
    rounds: int = field(default=3, metadata={"help": "Rounds; each runs every scheme once, alternating."})
    max_seconds: float = field(default=60.0, metadata={"help": "A round of one scheme stops after this many seconds."})
    max_wait_ms: float = field(default=5.0, metadata={"help": "The batched server's wait for more requests."})


@dataclass
class GpuConfig(Common):
    trl_python: str | None = field(default=None, metadata={"help": "Python with trl==1.12.0 (the GPU machine has no internet: install wheels)."})
    tokenizer: str = field(default="smollm2", metadata={"help": "Tokenizer for the Llama-1B-shaped model (embedded name or a folder)."})
    steps: int = 40
    batch_size: int = 16
    pairs: int = 3
    defaults_rounds: int = 3
    problems: int = 16


@dataclass
class QLoRAConfig(Common, QLoRABench):
    pass


@dataclass
class SearchBenchConfig(Common):
    data: str = field(default="$PRM_DATA_DIR/gsm8k/test.jsonl", metadata={"help": "GSM8K JSONL the problems come from."})
    model: str = field(default="smollm2", metadata={"help": "Generator (embedded name, folder or hub id)."})
    prm: str = field(default="minilm", metadata={"help": "A saved PRM folder, or a backbone name for an untrained PRM (its cost is the same in both schemes)."})
    problems: int = 2
    n: int = 8
    beam_width: int = 4
    max_steps: int = 4
    max_step_tokens: int = 32
    max_tokens: int = 128
    rounds: int = 3
    warmup: bool = field(default=True, metadata={"help": "One untimed search per scheme first (off: the first timed scheme, reuse, pays first-call costs)."})


@dataclass
class MCSearchConfig(Common):
    data: str = field(default="data/arithmetic_problems.jsonl", metadata={"help": "GSM8K-format problems (the project's arithmetic problems: SmolLM2 solves many)."})
    model: str = field(default="smollm2", metadata={"help": "Generator of the solutions and the rollouts."})
    problems: int = field(default=24, metadata={"help": "Problems to mine (the first ones of --data with --min_reference_steps)."})
    min_reference_steps: int = field(default=1, metadata={"help": "Mine problems whose reference solution has at least this many steps (2: the two-step problems, which SmolLM2 rarely solves)."})
    mine_samples: int = field(default=4, metadata={"help": "Solutions per problem (they are the labeled solutions)."})
    min_solve: float = field(default=0.25, metadata={"help": "Keep problems the generator solves at least this share of the time."})
    min_steps: int = field(default=6, metadata={"help": "Label solutions with at least this many steps."})
    max_solutions: int | None = field(default=None, metadata={"help": "Label at most this many solutions."})
    n: int = field(default=4, metadata={"help": "Rollouts per prefix."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per solution and per rollout."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, ("mine_samples", "min_steps", "max_solutions", "n", "max_new_tokens", "min_reference_steps"))


def run_train(cfg: TrainConfig) -> Path:
    work = REPO_ROOT / cfg.work_dir / "train"
    if cfg.smoke:
        cfg.backbones = [str(tiny_backbone("bert", work / "tiny-bert"))]
        cfg.random_init, cfg.n_train, cfg.n_eval, cfg.steps, cfg.batch_size, cfg.pairs = True, 24, 8, 3, 4, 1
        cfg.defaults_rounds, cfg.warmup, cfg.profile = 0, 1, []
        venv = REPO_ROOT / ".bench" / "trl-venv" / "bin" / "python"
        cfg.trl = bool(cfg.trl_python) or venv.is_file()  # never install TRL for a smoke run
    res = train_benchmark(cfg, resolve_data(cfg.data, 'data'), work)
    return save(cfg.results_dir, cfg.name or "train", res, cfg.note)


def run_prefix(cfg: PrefixConfig) -> Path:
    from benchmarks.prefix import prefix_benchmark

    model, random_init = cfg.model, False
    if cfg.smoke:
        model, random_init, cfg.solutions, cfg.batch_size = str(tiny_backbone("llama", REPO_ROOT / cfg.work_dir / "tiny-llama")), True, 6, 8
    rows, _ = gsm8k_rows(resolve_data(cfg.data, 'data'), cfg.solutions, 0)
    return save(cfg.results_dir, cfg.name or "prefix", prefix_benchmark(model, rows, cfg.batch_size, cfg.bf16, random_init), cfg.note)


def run_score(cfg: ScoreConfig) -> Path:
    from benchmarks.score import kinds_benchmark, score_benchmark

    if cfg.kinds:
        from prm.models.backbones import resolve

        body, n, problems, rounds = resolve(cfg.model), max(cfg.ns), cfg.problems, cfg.rounds
        if cfg.smoke:
            body, n, problems, rounds = None, 4, 2, 1  # tiny random look-alikes
        res = kinds_benchmark(body, resolve_data(cfg.data, "data"), n, problems, rounds, cfg.batch_size, bf16="bf16" in cfg.dtypes)
        return save(cfg.results_dir, cfg.name or "score_kinds", res, cfg.note)
    model = cfg.model
    if cfg.smoke:
        model, cfg.random_init, cfg.problems, cfg.rounds, cfg.ns = str(tiny_backbone("llama", REPO_ROOT / cfg.work_dir / "tiny-llama")), True, 2, 1, [4]
    res = score_benchmark(model, resolve_data(cfg.data, 'data'), cfg.ns, cfg.problems, cfg.rounds, cfg.random_init,
                          dtypes=tuple(cfg.dtypes) if not cfg.smoke else ("fp32", "bf16"))
    return save(cfg.results_dir, cfg.name or "score", res, cfg.note)


def run_label_cost(cfg: LabelCostConfig) -> Path:
    from benchmarks.label_cost import items_from_rows, label_cost_benchmark

    from prm.data import load

    n = 6 if cfg.smoke else cfg.solutions
    ds = load("gsm8k_errors", resolve_data(cfg.data, 'data')).select(range(n))
    return save(cfg.results_dir, cfg.name or "label_cost", label_cost_benchmark(items_from_rows(ds.to_list()), cfg.claude_model), cfg.note)


def run_efficiency(cfg: EfficiencyConfig) -> Path:
    from benchmarks.efficiency import efficiency_benchmark

    model, random_init = cfg.model, False
    if cfg.smoke:
        model, random_init, cfg.steps, cfg.batch_size = str(tiny_backbone("bert", REPO_ROOT / cfg.work_dir / "tiny-bert")), True, 3, 4
    rows, _ = gsm8k_rows(resolve_data(cfg.data, 'data'), max(64, cfg.steps * cfg.batch_size), 0)
    return save(cfg.results_dir, cfg.name or "efficiency", efficiency_benchmark(model, rows, cfg.steps, cfg.batch_size, random_init=random_init,
                                                                                peak_seconds=0.2 if cfg.smoke else 1.0), cfg.note)


def run_serve(cfg: ServeBenchConfig) -> Path:
    from benchmarks.serve import serve_benchmark

    model, random_init = cfg.model, False
    if cfg.smoke:
        model, random_init = str(tiny_backbone("bert", REPO_ROOT / cfg.work_dir / "tiny-bert")), True
        cfg.clients, cfg.requests, cfg.rounds, cfg.max_seconds = 4, 16, 1, 30.0
    rows, _ = gsm8k_rows(resolve_data(cfg.data, "data"), cfg.requests, 0)
    res = serve_benchmark(model, rows, REPO_ROOT / cfg.work_dir / "serve", cfg.clients, cfg.requests, cfg.rounds, cfg.max_seconds,
                          cfg.max_wait_ms, random_init)
    return save(cfg.results_dir, cfg.name or "serve", res, cfg.note)


def run_gpu(cfg: GpuConfig) -> list[Path]:
    """train + score on a CUDA machine with a randomly initialized Llama-3.2-1B-shaped model."""
    import torch

    if not torch.cuda.is_available() and not cfg.smoke:
        raise SystemExit("gpu: no CUDA device here; run this on a GPU machine (see README 'Benchmarks')")
    work = REPO_ROOT / cfg.work_dir
    model = tiny_backbone("llama", work / "tiny-llama", cfg.tokenizer) if cfg.smoke else llama_1b_dir(work / "llama-1b-shape", cfg.tokenizer)
    steps, bs, pairs, problems = (3, 4, 1, 2) if cfg.smoke else (cfg.steps, cfg.batch_size, cfg.pairs, cfg.problems)
    tcfg = TrainConfig(backbones=[str(model)], n_train=max(1000, steps * bs) if not cfg.smoke else 24, n_eval=200 if not cfg.smoke else 8,
                       steps=steps, batch_size=bs, pairs=pairs, defaults_rounds=min(pairs, cfg.defaults_rounds), random_init=True, warmup=5 if not cfg.smoke else 1,
                       profile=[] if cfg.smoke else ["all"], trl_python=cfg.trl_python, data=cfg.data, results_dir=cfg.results_dir, note=cfg.note, work_dir=cfg.work_dir)
    if cfg.smoke:  # never install TRL for a smoke run
        tcfg.trl = bool(cfg.trl_python) or (REPO_ROOT / ".bench" / "trl-venv" / "bin" / "python").is_file()
    tpath = save(cfg.results_dir, (cfg.name or "gpu") + "_train", train_benchmark(tcfg, resolve_data(cfg.data, 'data'), work / "gpu-train"), cfg.note)
    from benchmarks.score import score_benchmark

    spath = save(cfg.results_dir, (cfg.name or "gpu") + "_score",
                 score_benchmark(str(model), resolve_data(cfg.data, 'data'), [4] if cfg.smoke else [8, 16], problems, 1 if cfg.smoke else 3, random_init=True), cfg.note)
    return [tpath, spath]


def run_qlora(cfg: QLoRAConfig) -> Path:
    from benchmarks.qlora import qlora_benchmark, tiny_checkpoint

    work = REPO_ROOT / cfg.work_dir / "qlora"
    if cfg.smoke:
        cfg.model = str(tiny_checkpoint(work / "tiny-llama-lm"))
        cfg.n_train, cfg.n_eval, cfg.steps, cfg.batch_size, cfg.pairs, cfg.warmup, cfg.max_length = 8, 4, 3, 2, 1, 1, 128
    return save(cfg.results_dir, cfg.name or "qlora", qlora_benchmark(cfg, resolve_data(cfg.data, "data"), work), cfg.note)


def run_search(cfg: SearchBenchConfig) -> Path:
    import os

    import torch
    from benchmarks.search import problems_from, search_benchmark

    from prm.label.generate.local import load_causal_lm
    from prm.models.prm import PRM, PRMSpec

    torch.manual_seed(0)
    if cfg.smoke:  # tiny random Llama with SmolLM2's tokenizer as generator and as PRM
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        d = tiny_backbone("llama", REPO_ROOT / cfg.work_dir / "tiny-llama-smollm2", tokenizer="smollm2")
        model, tok = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d)).eval(), AutoTokenizer.from_pretrained(d)
        prm = PRM.from_backbone(str(d), PRMSpec(separator="\n"), use_pretrained=False)
        cfg.problems, cfg.n, cfg.beam_width, cfg.max_steps, cfg.max_step_tokens, cfg.max_tokens, cfg.rounds = 2, 4, 2, 3, 6, 20, 2
    else:
        model, tok = load_causal_lm(cfg.model)
        prm = PRM.load(resolve_data(cfg.prm, "prm")) if Path(resolve_data(cfg.prm, "prm")).is_dir() else PRM.from_backbone(cfg.prm, PRMSpec(separator="\n"))
    load_before = os.getloadavg()
    res = search_benchmark(model, tok, prm, problems_from(resolve_data(cfg.data, "data"), cfg.problems), cfg.n, cfg.beam_width, cfg.max_steps,
                           cfg.max_step_tokens, cfg.max_tokens, cfg.rounds, warmup=cfg.warmup)
    res.update(model=cfg.model if not cfg.smoke else "tiny-llama", prm=cfg.prm if not cfg.smoke else "tiny-llama",
               load_average_1min={"before": load_before[0], "after": os.getloadavg()[0]})
    return save(cfg.results_dir, cfg.name or "search", res, cfg.note)


def run_mc_search(cfg: MCSearchConfig) -> Path:
    from benchmarks.mc_search import LONG_EXAMPLES, mc_search_benchmark
    from benchmarks.qlora import tiny_checkpoint

    from prm.data import load
    from prm.label.generate import LocalGenerator

    work = REPO_ROOT / cfg.work_dir / "mc_search"
    model = cfg.model
    if cfg.smoke:  # a tiny random Llama: it solves nothing, so every problem and every solution is kept
        model = str(tiny_checkpoint(work / "tiny-llama-lm"))
        cfg.problems, cfg.mine_samples, cfg.min_solve, cfg.min_steps, cfg.n, cfg.max_new_tokens = 3, 2, 0.0, 3, 2, 8
    gen = LocalGenerator(model, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, examples=LONG_EXAMPLES)
    problems = [p for p in load("gsm8k", resolve_data(cfg.data, "data")) if len(p["completions"]) >= cfg.min_reference_steps][: cfg.problems]
    res = mc_search_benchmark(gen, problems, work, cfg.n, cfg.mine_samples, cfg.min_solve, cfg.min_steps, cfg.max_solutions,
                              step_words=2 if cfg.smoke else None)
    res.update(model=cfg.model if not cfg.smoke else "tiny-llama", max_new_tokens=cfg.max_new_tokens, min_reference_steps=cfg.min_reference_steps)
    return save(cfg.results_dir, cfg.name or "mc_search", res, cfg.note)


COMMANDS = {"train": (TrainConfig, run_train), "prefix": (PrefixConfig, run_prefix), "score": (ScoreConfig, run_score),
            "label_cost": (LabelCostConfig, run_label_cost), "efficiency": (EfficiencyConfig, run_efficiency), "gpu": (GpuConfig, run_gpu),
            "qlora": (QLoRAConfig, run_qlora), "search": (SearchBenchConfig, run_search),
            "serve": (ServeBenchConfig, run_serve), "mc_search": (MCSearchConfig, run_mc_search)}


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python exp/bench.py {{{','.join(COMMANDS)}}} [--smoke] [flags]\n\n{__doc__}")
        raise SystemExit(0)
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"error: usage: python exp/bench.py {{{','.join(COMMANDS)}}} [--smoke] [flags]; got {argv[:1] or 'nothing'}")
    cls, fn = COMMANDS[argv[0]]

    def go(cfg):
        path = resolve_data(cfg.data, "data")
        if cfg.dry_run:
            log.info("dry run: %s settings valid, data %s", argv[0], path)
            return None
        out = fn(cfg)
        log.info("wrote %s", out)
        return out

    return run(go, cls, description=f"benchmark: {argv[0]}", argv=argv[1:])


if __name__ == "__main__":
    main()
