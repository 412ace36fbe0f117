"""Train a PRM on any supported step-labeled data with any backbone; writes a run directory.

    # offline default: MiniLM on GSM8K reference solutions + injected errors (a few minutes, 2 CPUs)
    python exp/train_prm.py --config exp/configs/train_prm/offline.yaml
    # any data and backbone, e.g. Math-Shepherd with a Llama decoder and LoRA on a GPU
    python exp/train_prm.py --data peiyi9979/Math-Shepherd --format math_shepherd \\
        --model meta-llama/Llama-3.2-1B --lora --bf16 --run_name llama_ms
    # check a config without training (parses, validates, resolves the data; writes nothing)
    python exp/train_prm.py --config exp/configs/train_prm/offline.yaml --dry_run
    # resume a killed run
    python exp/train_prm.py --config exp/configs/train_prm/offline.yaml --resume_from_checkpoint true

Outputs: results/train_prm/<run_name>/{config.json, metrics.json, log.jsonl, predictions.jsonl}
and the trained PRM in .../model (gitignored). The recipe is `prm.recipes.train_prm`; a run directory
written with other settings is refused (`--overwrite` replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prm.config import DataArgs, ModelArgs, RunArgs, run
from prm.recipes import train_prm
from prm.train import PRMTrainingArguments


@dataclass
class TrainData(DataArgs):
    data: str | None = field(default="$PRM_DATA_DIR/gsm8k/train.jsonl", metadata={"help": "Training data: local file or Hugging Face dataset id."})
    format: str = field(default="gsm8k_errors", metadata={"help": "Data format (python -m prm.data --list)."})


TYPES = (RunArgs, TrainData, ModelArgs, PRMTrainingArguments)


def main(ra: RunArgs, data: TrainData, model: ModelArgs, args: PRMTrainingArguments) -> dict:
    return train_prm(ra, data, model, args, experiment="train_prm")


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
