"""The TRL PRM recipe on Math-Shepherd-format data: step tag `ки`, +/- labels, token classification
at the step separator, optional training on the last step only.

    # with internet: the full Math-Shepherd set from the hub
    python exp/math_shepherd.py --data peiyi9979/Math-Shepherd --limit 20000 --run_name ms_minilm
    # offline: the Math-Shepherd sample rows in $PRM_DATA_DIR/samples (7 solutions: a smoke run)
    python exp/math_shepherd.py --config exp/configs/math_shepherd/offline.yaml
    # the step tag itself as the separator (added to the tokenizer as a special token)
    python exp/math_shepherd.py --config exp/configs/math_shepherd/offline.yaml --step_separator ки

Same outputs as exp/train_prm.py, under results/math_shepherd/<run_name>/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prm.config import DataArgs, ModelArgs, RunArgs, run
from prm.recipes import train_prm
from prm.train import PRMTrainingArguments


@dataclass
class MathShepherdData(DataArgs):
    data: str | None = field(default="peiyi9979/Math-Shepherd", metadata={"help": "Math-Shepherd data: hub id or local JSONL."})
    format: str = field(default="math_shepherd", metadata={"help": "Math-Shepherd rows (ки step tags, +/- labels)."})


TYPES = (RunArgs, MathShepherdData, ModelArgs, PRMTrainingArguments)


def main(ra: RunArgs, data: MathShepherdData, model: ModelArgs, args: PRMTrainingArguments) -> dict:
    return train_prm(ra, data, model, args, experiment="math_shepherd")


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
