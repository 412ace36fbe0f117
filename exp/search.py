"""PRM-guided test-time search: majority vote, best-of-N, weighted majority, beam search and DVTS
at several N, side by side on one problem set.

    # offline: SmolLM2 generates, a PRM trained by exp/train_prm.py scores (see the recipe's header)
    python exp/search.py --config exp/configs/search/offline.yaml
    # a quick look: two strategies, 5 problems
    python exp/search.py --prm results/train_prm/minilm_gsm8k_errors/model --strategies best_of_n beam --ns 4 --limit 5
    # Claude as the PRM (an LLM critic; paid: the first call's estimate is printed, --yes, --max_cost_usd caps it)
    python exp/search.py --prm claude:claude-sonnet-4-6 --strategies best_of_n --ns 4 --limit 5 --yes --max_cost_usd 1
    # on a GPU machine with vLLM installed
    python exp/search.py --config exp/configs/search/offline.yaml --generator vllm --model meta-llama/Llama-3.2-1B-Instruct

The local generator and the PRM run on the GPU when there is one (``--device auto``), in bf16 there
and fp32 on a CPU (``--dtype auto``); vLLM places its own model.

Writes results/search/<run_name>/{config.json, metrics.json, predictions.jsonl}: accuracy with
bootstrap 95% intervals, generated tokens, PRM calls (solutions scored) and wall time per strategy
and N. Figures: python exp/make_figures.py.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from prm.answers import answers_equal
from prm.config import (
    ConfigError,
    DeviceArgs,
    RunArgs,
    at_least,
    check_model,
    require,
    resolve_data,
    run,
    settings,
    split_list,
)
from prm.data import load
from prm.eval.aggregate import AGGREGATORS
from prm.eval.bon import bootstrap_accuracy
from prm.io import RunDir, append_jsonl, read_appended, write_jsonl
from prm.label.claude import BudgetExceeded
from prm.models.critic import is_critic
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
    prm: str | None = field(default=None, metadata={"help": "A PRM folder saved by exp/train_prm.py, or claude:<model id> (an LLM critic; paid) "
                                                            "(needed by every strategy but majority)."})
    strategies: list[str] = field(default_factory=lambda: ["majority", "best_of_n", "weighted_majority", "beam", "dvts"],
                                  metadata={"help": "Strategy names."})
    ns: list[int] = field(default_factory=lambda: [4, 8, 16], metadata={"help": "N values (solutions per problem)."})
    beam_width: int = field(default=4, metadata={"help": "M: continuations per kept partial (beam) and subtree width (dvts)."})
    max_steps: int = field(default=10, metadata={"help": "Rounds of beam/DVTS; the last round generates to the end."})
    max_step_tokens: int = field(default=64, metadata={"help": "Token limit of one step."})
    max_tokens: int = field(default=256, metadata={"help": "Token limit of a whole solution."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    agg: str = field(default="last", metadata={"help": "Aggregator of step scores for the final pick (last, min, prod, mean)."})
    prm_batch_size: int = field(default=16, metadata={"help": "Solutions per PRM forward pass."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the 95% intervals."})
    yes: bool = field(default=False, metadata={"help": "claude:<id> critic: go ahead with its paid requests after printing the estimate of the first call."})
    max_cost_usd: float | None = field(default=None, metadata={"help": "claude:<id> critic: stop cleanly once it has spent this much."})

    def __post_init__(self) -> None:
        self.strategies = split_list(self.strategies)
        unknown = [x for x in self.strategies if x not in STRATEGIES]
        require(bool(self.strategies) and not unknown, "strategies", f"unknown {unknown}; known: {', '.join(STRATEGIES.names())}")
        try:
            self.ns = [int(n) for n in split_list(self.ns)]
        except ValueError:
            raise ConfigError(f"--ns {self.ns!r}: expected integers") from None
        require(bool(self.ns) and min(self.ns) >= 1, "ns", f"must be N values >= 1, got {self.ns}")
        at_least(self, ("beam_width", "max_steps", "max_step_tokens", "max_tokens", "prm_batch_size", "n_boot", "limit", "max_reference_steps"))
        at_least(self, ("skip",), 0)
        require(self.max_cost_usd is None or self.max_cost_usd >= 0, "max_cost_usd", f"must be >= 0, got {self.max_cost_usd}")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.agg in AGGREGATORS, "agg", f"unknown '{self.agg}'; known: {', '.join(AGGREGATORS.names())}")
        if any(x in ("beam", "dvts") for x in self.strategies):
            require(all(n % self.beam_width == 0 for n in self.ns), "ns",
                    f"{self.ns}: beam and dvts need every N to be a multiple of --beam_width {self.beam_width}")
        require(self.generator in GENERATORS, "generator", f"unknown '{self.generator}'; known: {', '.join(GENERATORS.names())}")
        needs = [x for x in self.strategies if x in NEEDS_PRM]
        require(self.prm is not None or not needs, "prm", f"is required by {', '.join(needs)}")
        if self.prm is not None and not is_critic(self.prm):
            check_model(self.prm, "prm")


TYPES = (RunArgs, SearchConfig, DeviceArgs)


def main(ra: RunArgs, cfg: SearchConfig, dev: DeviceArgs) -> dict:
    # --- setup: the run directory belongs to these settings (another run's is refused)
    device, dtype = dev.torch_device(), dev.torch_dtype()  # a GPU this machine lacks is refused now
    run_dir = RunDir.claim(ra.run_dir("search"), settings(ra, cfg, dev), seed=ra.seed, overwrite=ra.overwrite)
    paths = {"problems": resolve_data(cfg.problems, "problems"), "prm": resolve_data(cfg.prm, "prm")}
    if ra.dry_run:
        log.info("dry run: settings valid, %s; would write %s", paths, run_dir.path)
        return {"dry_run": True, **paths, "run_dir": str(run_dir.path)}

    # --- data
    recs = load(cfg.format, paths["problems"])
    rows = [r for r in recs if r.get("answer") is not None and (cfg.max_reference_steps is None or len(r["completions"]) <= cfg.max_reference_steps)]
    rows = rows[cfg.skip:][: cfg.limit]
    if not rows:
        raise ConfigError(f"--problems {cfg.problems}: no problems with an answer left after the filters")
    log.info("%d problems", len(rows))

    # --- models
    from prm.models.kinds import PRMLoadError
    from prm.models.prm import load_prm

    # a claude:<id> critic keeps its replies in the run directory (a rerun pays nothing twice) and
    # confirms its first paid call; search scores as it goes, so --max_cost_usd caps the rest
    critic = dict(cache_path=run_dir.path / "claude_critic.jsonl", yes=cfg.yes, max_cost_usd=cfg.max_cost_usd)
    try:
        prm = load_prm(paths["prm"], critic=critic, device=device, torch_dtype=dtype) if cfg.prm else None
    except PRMLoadError as e:
        raise ConfigError(f"--prm {cfg.prm}: {e}") from None
    run_dir.begin()
    extra: dict = {"cache_path": run_dir.path / "claude_requests.jsonl"} if cfg.generator == "claude" else {}  # a rerun pays nothing twice
    if cfg.generator == "local":
        extra.update(device=device, dtype=dtype)  # vLLM places its own model
    gen = SharedSamples(make_generator(cfg.generator, model=cfg.model, temperature=cfg.temperature, top_p=cfg.top_p,
                                       max_step_tokens=cfg.max_step_tokens, max_tokens=cfg.max_tokens, seed=ra.seed, **extra))

    # --- search: each finished (strategy, N) is appended to done.jsonl, so a killed run (hours on a
    # CPU) resumes where it stopped; RunDir.claim already refused a directory of other settings
    done_path = run_dir.path / "done.jsonl"
    if ra.overwrite:
        done_path.unlink(missing_ok=True)  # --overwrite starts over, even with the same settings
    done = {(d["row"]["strategy"], d["row"]["n"]): d for d in read_appended(done_path)}
    if done:
        log.info("resuming: %d of %d (strategy, N) already done in %s", len(done), len(cfg.ns) * len(cfg.strategies), done_path)
    table, predictions = [], []
    for n in cfg.ns:
        for name in cfg.strategies:
            if (name, n) in done:
                table.append(done[(name, n)]["row"])
                predictions += done[(name, n)]["predictions"]
                continue
            search_settings = SearchSettings(n=n, beam_width=cfg.beam_width, max_steps=cfg.max_steps, agg=cfg.agg, prm_batch_size=cfg.prm_batch_size)
            gen.reset()  # every (strategy, N) draws from the same random streams
            hits, tokens, calls, t0 = [], 0, 0, time.perf_counter()
            for r in tqdm(rows, desc=f"{name} N={n}", unit="problem"):
                try:
                    res = run_search(name, r["prompt"], gen, prm, search_settings)
                except BudgetExceeded as e:
                    raise SystemExit(f"stopped: {e}") from None
                ok = answers_equal(res.answer, r["answer"])
                hits.append(ok)
                tokens += res.tokens
                calls += res.prm_calls
                predictions.append({"id": r["id"], "strategy": name, "n": n, "gold": r["answer"], "answer": res.answer, "correct": ok,
                                    "tokens": res.tokens, "prm_calls": res.prm_calls, "steps": res.steps,
                                    "candidates": [{"answer": c["answer"], "score": c["score"]} for c in res.candidates]})
            row = {"strategy": name, "n": n, "n_problems": len(rows), **bootstrap_accuracy(hits, n_boot=cfg.n_boot, seed=ra.seed),
                   "generated_tokens": tokens, "prm_calls": calls, "wall_seconds": time.perf_counter() - t0}
            table.append(row)
            append_jsonl(done_path, {"row": row, "predictions": predictions[-len(rows):]})
            log.info("%s N=%d: accuracy %.3f [%.3f, %.3f], %d tokens, %d PRM calls, %.0f s", name, n, row["accuracy"], row["ci_low"],
                     row["ci_high"], tokens, calls, row["wall_seconds"])

    # --- save
    metrics = {"n_problems": len(rows), "strategies": cfg.strategies, "ns": cfg.ns, "rows": table,
               "note": "majority, best_of_n and weighted_majority at the same N share one set of samples (each is charged its tokens)"}
    write_jsonl(run_dir.path / "predictions.jsonl", predictions)
    run_dir.finish(metrics)
    log.info("wrote %s", run_dir.path)
    print(json.dumps(table, indent=1)[:3000])
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    return run(main, TYPES, description=__doc__.split("\n")[0], argv=argv)


if __name__ == "__main__":
    cli()
