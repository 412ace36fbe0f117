"""Evaluate a PRM (saved here or published): ProcessBench-style first-error F1, best-of-N, or step metrics.

    # CHAMP first-wrong-step annotations as a ProcessBench task; threshold chosen on a dev split
    python exp/evaluate.py --model results/train_prm/minilm_gsm8k_errors/model \\
        --task processbench --format champ_fws --dev_fraction 0.3 --run_name champ_minilm
    # a published PRM on the hub copy of ProcessBench (all four subsets; kind detected, or --kind)
    python exp/evaluate.py --model Qwen/Qwen2.5-Math-PRM-7B --task processbench --threshold 0.5
    # Claude as an LLM critic, measured like ProcessBench's critic baselines (paid: estimate printed, --yes)
    python exp/evaluate.py --model claude:claude-sonnet-4-6 --task processbench --subsets gsm8k --limit 100 --yes
    # ProcessBench files with a dev file for the threshold
    python exp/evaluate.py --model M --task processbench --data gsm8k.jsonl --dev_data math.jsonl
    # best-of-N on candidate sets ({"problem", "answer", "candidates": [...]})
    python exp/evaluate.py --model M --task best_of_n --data candidates.jsonl --ns 1 2 4 8
    # step metrics on held-out stepwise data
    python exp/evaluate.py --model M --task steps --data held_out.jsonl --format stepwise
    # ... or on the problems a PRM trained with --eval_fraction 0.2 on (another labeling of) the same file never saw
    python exp/evaluate.py --model M --task steps --data labels.jsonl --format stepwise --holdout_fraction 0.2

Writes results/evaluate/<run_name>/{config.json, metrics.json, predictions.jsonl}; the recipe is
`prm.recipes.evaluate_prm`.
"""

from __future__ import annotations

import json

from prm.config import DeviceArgs, RunArgs, run
from prm.recipes import EvalConfig, evaluate_prm

TYPES = (EvalConfig, RunArgs, DeviceArgs)


def main(cfg: EvalConfig, ra: RunArgs, dev: DeviceArgs) -> dict:
    metrics = evaluate_prm(cfg, ra, experiment="evaluate", device_args=dev)
    print(json.dumps(metrics, indent=2)[:3000])
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
