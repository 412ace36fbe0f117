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
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoTokenizer, set_seed

from prm.config import run
from prm.data import load, resolve_path
from prm.io import start_run, write_json, write_jsonl
from prm.models.backbones import resolve
from prm.models.prm import PRM
from prm.rl import grpo_prompts, reward_functions

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
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})
    experiment: str = field(default="rl_grpo", metadata={"help": "Results folder: results/<experiment>/<run_name>."})


def main(cfg: RLConfig, args: GRPOConfig) -> dict:
    # --- setup
    args.run_name = args.run_name or "default"
    run_dir = Path(cfg.results_dir) / cfg.experiment / args.run_name
    if args.output_dir in (None, "trainer_output"):
        args.output_dir = str(run_dir / "checkpoints")
    start_run(run_dir, {"script": asdict(cfg), "training": args.to_dict()}, seed=args.seed)
    set_seed(args.seed)

    # --- data: conversational prompts when the policy has a chat template; gold answers ride along
    policy = resolve(cfg.policy)
    tok = AutoTokenizer.from_pretrained(policy, trust_remote_code=args.trust_remote_code)
    records = load(cfg.format, resolve_path(cfg.data), limit=cfg.limit).to_list()
    from datasets import Dataset

    train = Dataset.from_list(grpo_prompts(records, tok))
    log.info("%d problems; %d completions per problem", len(train), args.num_generations)

    # --- PRM and rewards
    prm = PRM.load(resolve_path(cfg.prm), trust_remote_code=args.trust_remote_code)
    funcs, weights = reward_functions(prm, cfg.aggregator, cfg.split_mode, cfg.prm_batch_size, cfg.empty_reward, cfg.prm_weight, cfg.answer_weight)
    args.reward_weights = weights

    # --- train
    trainer = GRPOTrainer(model=policy, reward_funcs=funcs, args=args, train_dataset=train, processing_class=tok)
    prm.model.to(trainer.accelerator.device)  # each process scores its own completions
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {n: p.detach().float().norm().item() for n, p in model.named_parameters()}
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(run_dir / "model"))

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
    }
    write_json(run_dir / "metrics.json", metrics)
    write_jsonl(run_dir / "log.jsonl", history)
    name = funcs[0].__name__
    log.info("%d steps; %s mean: first %.3f, last %.3f; %d/%d parameter tensors changed -> %s", metrics["steps"], name,
             metrics["first"].get(f"rewards/{name}/mean", float("nan")), metrics["last"].get(f"rewards/{name}/mean", float("nan")),
             changed, len(before), run_dir)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(main, (RLConfig, GRPOConfig), description=__doc__.split("\n")[0])
