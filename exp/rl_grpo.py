"""GRPO with process rewards: TRL's GRPOTrainer, a PRM of this project as the reward model.

Needs the RL extra (``pip install -e '.[rl]'``: trl). The PRM scores each sampled completion split
into steps (one batched forward pass per reward call) and the steps' scores become one reward
(``--aggregator min|prod|last``); ``--answer_weight`` adds an answer-correctness reward (math-verify
against the dataset's gold answer), mixed by TRL's ``reward_weights``.

    # CPU, offline: SmolLM2-135M as the policy, a MiniLM PRM trained here, a handful of steps
    python exp/train_prm.py --config exp/configs/train_prm/rl_prm.yaml     # the PRM (minutes)
    python exp/rl_grpo.py --config exp/configs/rl_grpo/offline.yaml
    # GPU, one node with 8 GPUs (the PRM runs on each process's GPU; bf16; vLLM generation if installed)
    accelerate launch --num_processes 8 exp/rl_grpo.py --config exp/configs/rl_grpo/gpu.yaml \\
        --policy Qwen/Qwen2.5-Math-1.5B-Instruct --prm results/train_prm/<run>/model --run_name qwen_prm
    # add DeepSpeed ZeRO-3 for larger policies: accelerate launch --config_file <your zero3.yaml> ... (same flags)

Every GRPOConfig flag (``--num_generations``, ``--learning_rate``, ``--beta``, ``--use_vllm``, ...)
works as well. Outputs: results/rl_grpo/<run_name>/{config.json, metrics.json, log.jsonl} and the
trained policy in .../model (gitignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import AutoTokenizer, set_seed

from prm.config import (
    DTYPE_SPELLINGS,
    RunArgs,
    at_least,
    check_model,
    dtype_name,
    require,
    resolve_data,
    resolve_dtype,
    run,
    settings,
)
from prm.data import load
from prm.eval.aggregate import AGGREGATORS
from prm.io import RunDir, write_jsonl
from prm.models.backbones import resolve
from prm.models.prm import PRM
from prm.rl import grpo_prompts, reward_functions
from prm.steps import SPLIT_MODES

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError:  # an optional extra: say how to get it instead of a traceback
    raise SystemExit("error: exp/rl_grpo.py needs TRL: pip install -e '.[rl]' (pins trl)") from None

log = logging.getLogger("rl_grpo")


@dataclass
class RLConfig:
    policy: str = field(default="smollm2", metadata={"help": "Policy: hub id, local directory, or embedded 'smollm2'."})
    prm: str = field(default="results/train_prm/rl_prm/model", metadata={"help": "A PRM directory saved by exp/train_prm.py (any PRM kind)."})
    data: str = field(default="data/sample_problems.jsonl", metadata={"help": "Problems with gold answers: local file or hub dataset id."})
    format: str = field(default="gsm8k", metadata={"help": "Format of --data (python -m prm.data --list)."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many problems."})
    aggregator: str = field(default="min", metadata={"help": "Step scores -> reward: min, prod, last, mean, geomean."})
    split_mode: str = field(default="lines", metadata={"help": "How completions split into steps (the PRM's training split): lines, paragraphs, headers, tag, auto."})
    prm_weight: float = field(default=1.0, metadata={"help": "Weight of the PRM reward."})
    answer_weight: float = field(default=0.0, metadata={"help": "Weight of the answer-correctness reward (0: PRM only)."})
    empty_reward: float = field(default=0.0, metadata={"help": "PRM reward of a completion with no step."})
    prm_batch_size: int = field(default=16, metadata={"help": "Completions per PRM forward pass."})
    prm_dtype: str = field(default="auto", metadata={"help": "PRM weights while it scores: auto (bf16 when the policy trains on a GPU, "
                                                             "fp32 on a CPU), bf16, fp16 (GPU only) or fp32."})

    def __post_init__(self) -> None:
        check_model(self.policy, "policy")
        check_model(self.prm, "prm")
        at_least(self, ("limit", "prm_batch_size"))
        require(self.aggregator in AGGREGATORS, "aggregator", f"unknown '{self.aggregator}'; known: {', '.join(AGGREGATORS.names())}")
        name = dtype_name(self.prm_dtype)
        require(name is not None, "prm_dtype", f"unknown {self.prm_dtype!r}; known: {', '.join(DTYPE_SPELLINGS)}")
        self.prm_dtype = name
        require(self.split_mode in SPLIT_MODES, "split_mode", f"unknown '{self.split_mode}'; known: {', '.join(SPLIT_MODES)}")
        require(self.prm_weight >= 0 and self.answer_weight >= 0 and self.prm_weight + self.answer_weight > 0, "prm_weight",
                "--prm_weight and --answer_weight must be >= 0 and not both 0")


TYPES = (RunArgs, RLConfig, GRPOConfig)


def main(ra: RunArgs, cfg: RLConfig, args: GRPOConfig) -> dict:
    # --- setup: the run directory belongs to these settings (another run's is refused)
    device = args.device  # this process's: the policy's, and the PRM's
    require(cfg.prm_dtype != "fp16" or device.type == "cuda", "prm_dtype", f"fp16 needs a GPU (this run trains on {device.type}); use bf16 or fp32")
    run_dir = RunDir.claim(ra.run_dir("rl_grpo", args.run_name or "default"), settings(ra, cfg, args), seed=args.seed, overwrite=ra.overwrite)
    if args.output_dir in (None, "trainer_output"):
        args.output_dir = str(run_dir.path / "checkpoints")
    paths = {"data": resolve_data(cfg.data, "data"), "prm": resolve_data(cfg.prm, "prm")}
    if ra.dry_run:
        log.info("dry run: settings valid, %s; would write %s", paths, run_dir.path)
        return {"dry_run": True, **paths, "run_dir": str(run_dir.path)}
    set_seed(args.seed)

    # --- data: conversational prompts when the policy has a chat template; gold answers ride along
    policy = resolve(cfg.policy)
    tok = AutoTokenizer.from_pretrained(policy, trust_remote_code=args.trust_remote_code)
    records = load(cfg.format, paths["data"], limit=cfg.limit).to_list()
    from datasets import Dataset

    train = Dataset.from_list(grpo_prompts(records, tok))
    log.info("%d problems; %d completions per problem", len(train), args.num_generations)

    # --- PRM and rewards
    # on each process's device (the policy's), in bf16 on a GPU: scoring is inference
    prm = PRM.load(paths["prm"], trust_remote_code=args.trust_remote_code, torch_dtype=resolve_dtype(cfg.prm_dtype, device), device=device)
    weights_at = next(prm.model.parameters())  # where and how the PRM scored (metrics.json)
    funcs, weights = reward_functions(prm, cfg.aggregator, cfg.split_mode, cfg.prm_batch_size, cfg.empty_reward, cfg.prm_weight, cfg.answer_weight)
    args.reward_weights = weights

    # --- train
    run_dir.begin()
    trainer = GRPOTrainer(model=policy, reward_funcs=funcs, args=args, train_dataset=train, processing_class=tok)
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {n: p.detach().float().norm().item() for n, p in model.named_parameters()}
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(run_dir.path / "model"))

    # --- save: reward curves from TRL's log, and how much the policy moved
    history = trainer.state.log_history
    steps = [h for h in history if "reward" in h]
    changed = sum(abs(p.detach().float().norm().item() - before[n]) > 0 for n, p in model.named_parameters())
    metrics = {
        "steps": trainer.state.global_step,
        "reward_keys": sorted({k for h in steps for k in h if k.startswith("rewards/")}),
        "first": steps[0] if steps else {},
        "last": steps[-1] if steps else {},
        "params_changed": changed,
        "params_total": len(before),
        "prm_weights": f"{weights_at.device.type} {str(weights_at.dtype).removeprefix('torch.')}",
    }
    write_jsonl(run_dir.path / "log.jsonl", history)
    run_dir.finish(metrics)
    name = funcs[0].__name__
    log.info("%d steps; %s mean: first %.3f, last %.3f; %d/%d parameter tensors changed -> %s", metrics["steps"], name,
             metrics["first"].get(f"rewards/{name}/mean", float("nan")), metrics["last"].get(f"rewards/{name}/mean", float("nan")),
             changed, len(before), run_dir.path)
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
