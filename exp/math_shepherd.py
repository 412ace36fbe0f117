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

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exp.train_prm import TrainPRMConfig, main
from prm.config import parse
from prm.train import PRMTrainingArguments


@dataclass
class MathShepherdConfig(TrainPRMConfig):
    data: str = field(default="peiyi9979/Math-Shepherd", metadata={"help": "Math-Shepherd data: hub id or local JSONL."})
    format: str = field(default="math_shepherd", metadata={"help": "Kept for completeness; Math-Shepherd rows."})
    experiment: str = field(default="math_shepherd", metadata={"help": "Results folder: results/<experiment>/<run_name>."})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(*parse((MathShepherdConfig, PRMTrainingArguments), description=__doc__.split("\n")[0]))
