"""Serve a PRM over HTTP: batched step scoring, plus OpenRLHF's remote reward model protocol.

Needs the serve extra (``pip install -e '.[serve]'``: fastapi, uvicorn).

    python exp/serve_prm.py --model results/train_prm/rl_prm/model --port 8000
    curl -s localhost:8000/score -H 'Content-Type: application/json' \\
        -d '{"items": [{"problem": "What is 2+3*4?", "steps": ["3*4 = 12.", "2 + 12 = 14."]}]}'
    # as OpenRLHF's reward model (another machine): --reward.remote_url http://<host>:8000/get_reward
    python exp/serve_prm.py --model <prm dir> --host 0.0.0.0 --answer_weight 1.0   # + answer correctness from --data.label_key

The PRM runs on --device (auto: the GPU when there is one) in --dtype (auto: bf16 on a GPU, fp32
on a CPU; it used to be fp32 unless --bf16 was given).

Endpoints and JSON shapes: `prm/serve.py`. Solutions of concurrent requests are scored together:
the server waits up to --max_wait_ms for more requests, then runs one batched forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from prm.config import DeviceArgs, at_least, require, resolve_data, run
from prm.eval.aggregate import AGGREGATORS
from prm.models.prm import PRM
from prm.serve import ServeSettings, build_app
from prm.steps import SPLIT_MODES

log = logging.getLogger("serve_prm")


@dataclass
class ServeConfig:
    model: str = field(metadata={"help": "A PRM directory saved by exp/train_prm.py (any PRM kind)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0: all, for RL workers on other machines)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    aggregator: str = field(default="min", metadata={"help": "Default solution score: min, prod, last, mean, geomean (a /score request may pick another)."})
    split_mode: str = field(default="lines", metadata={"help": "How a solution text (/score 'solution', OpenRLHF responses) splits into steps: lines, paragraphs, headers, tag, auto."})
    batch_size: int = field(default=16, metadata={"help": "Solutions per forward pass."})
    max_wait_ms: float = field(default=5.0, metadata={"help": "How long to collect concurrent requests before scoring them together."})
    max_batch_items: int = field(default=64, metadata={"help": "Solutions scored per batched call at most (a larger single request still goes whole)."})
    max_items_per_request: int = field(default=1024, metadata={"help": "Larger requests get 413."})
    prm_weight: float = field(default=1.0, metadata={"help": "/get_reward: weight of the PRM score."})
    answer_weight: float = field(default=0.0, metadata={"help": "/get_reward: weight of answer correctness against the request's labels (0: PRM only)."})
    empty_reward: float = field(default=0.0, metadata={"help": "/get_reward: PRM score of a response with no step."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow models that ship custom code."})
    dry_run: bool = field(default=False, metadata={"help": "Validate the settings and the model folder, then exit without serving."})

    def __post_init__(self) -> None:
        require(1 <= self.port <= 65535, "port", f"must be a TCP port (1-65535), got {self.port}")
        at_least(self, ("batch_size", "max_batch_items", "max_items_per_request"))
        require(self.max_wait_ms >= 0, "max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        require(self.aggregator in AGGREGATORS, "aggregator", f"unknown '{self.aggregator}'; known: {', '.join(AGGREGATORS.names())}")
        require(self.split_mode in SPLIT_MODES, "split_mode", f"unknown '{self.split_mode}'; known: {', '.join(SPLIT_MODES)}")


TYPES = (ServeConfig, DeviceArgs)


def main(cfg: ServeConfig, dev: DeviceArgs) -> None:
    import uvicorn

    model_dir = resolve_data(cfg.model, "model")
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"--model {cfg.model}: no such PRM directory")
    device, dtype = dev.torch_device(), dev.torch_dtype()  # a GPU this machine lacks is a mistake a dry run shows
    if cfg.dry_run:
        log.info("dry run: settings valid, would serve %s on %s:%d (%s, %s)", model_dir, cfg.host, cfg.port, device, dtype)
        return
    prm = PRM.load(model_dir, torch_dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    prm.model.to(device)
    settings = ServeSettings(aggregator=cfg.aggregator, split_mode=cfg.split_mode, batch_size=cfg.batch_size, max_wait_ms=cfg.max_wait_ms,
                             max_batch_items=cfg.max_batch_items, max_items_per_request=cfg.max_items_per_request, empty_reward=cfg.empty_reward,
                             prm_weight=cfg.prm_weight, answer_weight=cfg.answer_weight)
    app = build_app(prm, settings, model_name=cfg.model)
    log.info("serving %s on http://%s:%d (%s, %s): POST /score, POST /get_reward, GET /health", cfg.model, cfg.host, cfg.port, device, dtype)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


def cli(argv: list[str] | None = None) -> None:
    run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
