"""PRM-guided test-time search: majority vote, best-of-N, weighted majority, beam search and DVTS
at several N, side by side on one problem set.

    # offline: SmolLM2 generates, a PRM trained by exp/train_prm.py scores (see the recipe's header)
    python exp/search.py --config exp/configs/search/offline.yaml
    # a quick look: two strategies, 5 problems
    python exp/search.py --prm results/train_prm/minilm_gsm8k_errors/model --strategies best_of_n,beam --ns 4 --limit 5
    # on a GPU machine with vLLM installed
    python exp/search.py --config exp/configs/search/offline.yaml --generator vllm --model meta-llama/Llama-3.2-1B-Instruct

Writes results/search/<run_name>/{config.json, metrics.json, predictions.jsonl}: accuracy with
bootstrap 95% intervals, generated tokens, PRM calls (solutions scored) and wall time per strategy
and N. Figures: python exp/make_figures.py.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm.auto import tqdm

from prm.answers import answers_equal
from prm.config import run
from prm.data import load, resolve_path
from prm.eval.bon import bootstrap_accuracy
from prm.io import start_run, write_json, write_jsonl
from prm.search import GENERATORS, STRATEGIES, SearchSettings, make_generator, run_search
from prm.search.generate import SharedSamples

log = logging.getLogger("search")
NEEDS_PRM = ("best_of_n", "weighted_majority", "beam", "dvts")


@dataclass
class SearchConfig:
    problems: str = field(default="$PRM_DATA_DIR/gsm8k/test.jsonl", metadata={"help": "Problem file (any format with prompt + answer)."})
    format: str = field(default="gsm8k", metadata={"help": "Format of --problems (python -m prm.data --list)."})
    max_reference_steps: int | None = field(default=None, metadata={"help": "Keep problems whose reference solution has at most this many steps (an easier subset)."})
    skip: int = field(default=0, metadata={"help": "Skip this many problems (after the step filter)."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many problems (after the step filter)."})
    generator: str = field(default="local", metadata={"help": "local (transformers, prefix KV reuse), vllm (GPU) or claude (--model a Claude model id; ANTHROPIC_API_KEY)."})
    model: str = field(default="smollm2", metadata={"help": "Generator model: embedded name, folder or hub id."})
    prm: str | None = field(default=None, metadata={"help": "A PRM folder saved by exp/train_prm.py (needed by every strategy but majority)."})
    strategies: str = field(default="majority,best_of_n,weighted_majority,beam,dvts", metadata={"help": "Comma-separated strategy names."})
    ns: str = field(default="4,8,16", metadata={"help": "Comma-separated N values (solutions per problem)."})
    beam_width: int = field(default=4, metadata={"help": "M: continuations per kept partial (beam) and subtree width (dvts)."})
    max_steps: int = field(default=10, metadata={"help": "Rounds of beam/DVTS; the last round generates to the end."})
    max_step_tokens: int = field(default=64, metadata={"help": "Token limit of one step."})
    max_tokens: int = field(default=256, metadata={"help": "Token limit of a whole solution."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    agg: str = field(default="last", metadata={"help": "Aggregator of step scores for the final pick (last, min, prod, mean)."})
    prm_batch_size: int = field(default=16, metadata={"help": "Solutions per PRM forward pass."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals."})
    seed: int = field(default=0, metadata={"help": "Sampling seed; the same seed repeats a run."})
    run_name: str = field(default="default", metadata={"help": "Run folder: results/<experiment>/<run_name>."})
    experiment: str = field(default="search", metadata={"help": "Results folder: results/<experiment>/<run_name>."})
    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})

    def __post_init__(self):
        self.strategy_list = [s for s in self.strategies.split(",") if s]
        for s in self.strategy_list:
            if s not in STRATEGIES:
                raise SystemExit(f"error: --strategies: unknown strategy '{s}'; known: {', '.join(STRATEGIES.names())}")
        try:
            self.n_list = [int(n) for n in self.ns.split(",") if n]
        except ValueError:
            raise SystemExit(f"error: --ns {self.ns!r}: expected comma-separated integers") from None
        if not self.n_list or min(self.n_list) < 1:
            raise SystemExit(f"error: --ns {self.ns!r}: expected positive integers")
        if any(s in ("beam", "dvts") for s in self.strategy_list) and any(n % self.beam_width for n in self.n_list):
            raise SystemExit(f"error: --ns {self.ns}: beam and dvts need every N to be a multiple of --beam_width {self.beam_width}")
        if self.generator not in GENERATORS:
            raise SystemExit(f"error: --generator: unknown generator '{self.generator}'; known: {', '.join(GENERATORS.names())}")
        if self.prm is None and any(s in NEEDS_PRM for s in self.strategy_list):
            raise SystemExit(f"error: --prm is required by {', '.join(s for s in self.strategy_list if s in NEEDS_PRM)}")


def main(cfg: SearchConfig) -> dict:
    # --- setup
    run_dir = start_run(Path(cfg.results_dir) / cfg.experiment / cfg.run_name,
                        {k: v for k, v in asdict(cfg).items() if k not in ("strategy_list", "n_list")}, seed=cfg.seed)

    # --- data
    recs = load(cfg.format, resolve_path(cfg.problems))
    rows = [r for r in recs if r.get("answer") is not None and (cfg.max_reference_steps is None or len(r["completions"]) <= cfg.max_reference_steps)]
    rows = rows[cfg.skip:][: cfg.limit]
    if not rows:
        raise SystemExit(f"error: --problems {cfg.problems}: no problems with an answer left after the filters")
    log.info("%d problems", len(rows))

    # --- models
    from prm.models.prm import PRM

    prm = PRM.load(resolve_path(cfg.prm)) if cfg.prm else None
    extra = {"cache_path": run_dir / "claude_requests.jsonl"} if cfg.generator == "claude" else {}  # a rerun pays nothing twice
    gen = SharedSamples(make_generator(cfg.generator, model=cfg.model, temperature=cfg.temperature, top_p=cfg.top_p,
                                       max_step_tokens=cfg.max_step_tokens, max_tokens=cfg.max_tokens, seed=cfg.seed, **extra))

    # --- search
    table, predictions = [], []
    for n in cfg.n_list:
        for name in cfg.strategy_list:
            settings = SearchSettings(n=n, beam_width=cfg.beam_width, max_steps=cfg.max_steps, agg=cfg.agg, prm_batch_size=cfg.prm_batch_size)
            gen.reset()  # every (strategy, N) draws from the same random streams
            hits, tokens, calls, t0 = [], 0, 0, time.perf_counter()
            for r in tqdm(rows, desc=f"{name} N={n}", unit="problem"):
                res = run_search(name, r["prompt"], gen, prm, settings)
                ok = answers_equal(res.answer, r["answer"])
                hits.append(ok)
                tokens += res.tokens
                calls += res.prm_calls
                predictions.append({"id": r["id"], "strategy": name, "n": n, "gold": r["answer"], "answer": res.answer, "correct": ok,
                                    "tokens": res.tokens, "prm_calls": res.prm_calls, "steps": res.steps,
                                    "candidates": [{"answer": c["answer"], "score": c["score"]} for c in res.candidates]})
            row = {"strategy": name, "n": n, "n_problems": len(rows), **bootstrap_accuracy(hits, n_boot=cfg.n_boot, seed=cfg.seed),
                   "generated_tokens": tokens, "prm_calls": calls, "wall_seconds": time.perf_counter() - t0}
            table.append(row)
            log.info("%s N=%d: accuracy %.3f [%.3f, %.3f], %d tokens, %d PRM calls, %.0f s", name, n, row["accuracy"], row["ci_low"],
                     row["ci_high"], tokens, calls, row["wall_seconds"])

    # --- save
    metrics = {"n_problems": len(rows), "strategies": cfg.strategy_list, "ns": cfg.n_list, "rows": table,
               "note": "majority, best_of_n and weighted_majority at the same N share one set of samples (each is charged its tokens)"}
    write_json(run_dir / "metrics.json", metrics)
    write_jsonl(run_dir / "predictions.jsonl", predictions)
    log.info("wrote %s", run_dir)
    print(json.dumps(table, indent=1)[:3000])
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run(main, SearchConfig, description=__doc__.split("\n")[0])
