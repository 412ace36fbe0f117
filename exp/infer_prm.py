"""Score the steps of solutions with a trained PRM: a readable per-step table and a JSONL file.

    python exp/infer_prm.py --model results/train_prm/minilm_gsm8k_errors/model \\
        --data data/sample_stepwise.jsonl --format stepwise --output scores.jsonl
    python exp/infer_prm.py --model results/train_prm/minilm_gsm8k_errors/model \\
        --problem "What is 2+3*4?" --steps "3*4 = 12." "2 + 12 = 15." "The answer is 15."

The PRM runs on the GPU when there is one (``--device auto``), in bf16 there and fp32 on a CPU
(``--dtype auto``); ``--device cpu --dtype fp32`` pins both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from prm.config import DeviceArgs, Options, at_least, check_model, require, resolve_data, run
from prm.data import load
from prm.eval.aggregate import AGGREGATORS, aggregate
from prm.eval.steps import score_records
from prm.io import write_jsonl
from prm.models.prm import PRM

log = logging.getLogger("infer_prm")


@dataclass
class InferConfig:
    model: str = field(metadata={"help": "A PRM directory saved by exp/train_prm.py (full model or adapter)."})
    data: str | None = field(default=None, metadata={"help": "Solutions to score (any supported format)."})
    format: str = field(default="stepwise", metadata={"help": "Format of --data (python -m prm.data --list)."})
    format_options: Options = field(default_factory=Options, metadata={"help": "Converter options: a mapping in YAML; JSON or key=value,... on the command line."})
    problem: str | None = field(default=None, metadata={"help": "Score one solution given on the command line..."})
    steps: list[str] = field(default_factory=list, metadata={"help": "...with these steps."})
    limit: int | None = field(default=None, metadata={"help": "Score at most this many records."})
    output: str | None = field(default=None, metadata={"help": "JSONL output (records with step_scores)."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per forward pass."})
    aggregator: str = field(default="min", metadata={"help": "Solution score shown in the table: min, prod, last, mean, geomean."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow models that ship custom code."})
    dry_run: bool = field(default=False, metadata={"help": "Parse, validate and resolve the data, then exit."})

    def __post_init__(self) -> None:
        self.format_options = Options(self.format_options)
        check_model(self.model, "model")
        at_least(self, ("limit", "batch_size"))
        require(self.aggregator in AGGREGATORS, "aggregator", f"unknown {self.aggregator!r}; known: {', '.join(AGGREGATORS.names())}")
        require(bool(self.data) != bool(self.problem), "data", "give --data FILE, or --problem TEXT --steps STEP [STEP ...] (one of them)")
        require(not self.problem or bool(self.steps), "steps", "--problem needs its --steps")
        require(self.output is None or not Path(self.output).is_dir(), "output", f"{self.output} is a directory; give a file name")


def main(cfg: InferConfig, dev: DeviceArgs) -> list[dict]:
    device, dtype = dev.torch_device(), dev.torch_dtype()  # a GPU this machine lacks is refused before any work
    path = resolve_data(cfg.data, "data")
    if cfg.dry_run:
        log.info("dry run: settings valid, data %s", path)
        return []
    prm = PRM.load(cfg.model, trust_remote_code=cfg.trust_remote_code, device=device, torch_dtype=dtype)
    if cfg.problem:
        records = [{"id": "cli", "prompt": cfg.problem, "completions": cfg.steps, "labels": [None] * len(cfg.steps)}]
    else:
        records = load(cfg.format, path, limit=cfg.limit, **cfg.format_options).to_list()
    scored = score_records(prm, records, cfg.batch_size)
    for r in scored:
        head = r["prompt"].replace("\n", " ")
        print(f"\n[{r['id']}] {head[:100]}{'…' if len(head) > 100 else ''}")
        for i, (step, s) in enumerate(zip(r["completions"], r["step_scores"])):
            lab = r["labels"][i] if i < len(r["labels"]) else None
            mark = "" if lab is None else f"  (label {lab:g})"
            print(f"  {i + 1:2d}  {s:5.3f}  {step.replace(chr(10), ' ')[:90]}{mark}")
        if len(r["step_scores"]) < len(r["completions"]):
            print(f"      ({len(r['completions']) - len(r['step_scores'])} steps beyond max_length not scored)")
        if r["step_scores"]:
            print(f"  solution score ({cfg.aggregator}): {aggregate(r['step_scores'], cfg.aggregator):.3f}")
    if cfg.output:
        n = write_jsonl(cfg.output, scored)
        log.info("wrote %d scored records to %s", n, cfg.output)
    return scored


TYPES = (InferConfig, DeviceArgs)


def cli(argv: list[str] | None = None) -> list[dict]:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
