"""Figures of PRM-guided search: accuracy vs N and vs generated tokens per strategy
(``results/search/<run>/metrics.json``, written by `exp/search.py`), and the beam-search
prefix-reuse benchmark (``results/bench/search.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.ticker import NullFormatter

from prm.plots import FIGURES, Made, figure, save_figure

COLORS = {"majority": "tab:gray", "best_of_n": "tab:blue", "weighted_majority": "tab:green", "beam": "tab:orange", "dvts": "tab:red"}


def _runs(results_dir: Path) -> list[tuple[str, dict, Path]]:
    root = Path(results_dir) / "search"
    out = []
    for f in sorted(root.glob("*/metrics.json")) if root.is_dir() else []:
        m = json.loads(f.read_text())
        if m.get("rows"):
            out.append((f.parent.name, m, f))
    return out


def _by_strategy(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["strategy"], []).append(r)
    return {k: sorted(v, key=lambda r: r["n"]) for k, v in out.items()}


@FIGURES.register("search")
def search_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    made = []
    for run, m, src in _runs(results_dir):
        fig, axes = figure(1, 2, figsize=(8, 3), sharey=True)
        for name, rows in _by_strategy(m["rows"]).items():
            acc = [r["accuracy"] for r in rows]
            err = [[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]]
            kw = dict(color=COLORS.get(name), label=name, marker="o", capsize=2, ms=3)
            axes[0].errorbar([r["n"] for r in rows], acc, yerr=err, **kw)
            axes[1].errorbar([r["generated_tokens"] / max(1, r["n_problems"]) for r in rows], acc, yerr=err, **kw)
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("N (solutions per problem)")
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
        axes[1].set_xlabel("generated tokens per problem")
        axes[0].set_ylabel("accuracy (95% bootstrap interval)")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"PRM-guided search: {run} ({m.get('n_problems')} problems)", fontsize=9)
        stem = save_figure(fig, Path(figures_dir) / f"search_{run}")
        made.append(Made(stem, (src,), f"Search run {run}: accuracy vs N and vs generated tokens per problem, per strategy."))
    return made


@FIGURES.register("bench_search")
def bench_search_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    made = []
    # search: the default run (N=8); search_n16: the same protocol at N=16 (--n 16 --problems 1 --name search_n16)
    for name in ("search", "search_n16"):
        src = Path(results_dir) / "bench" / f"{name}.json"
        if not src.is_file():
            continue
        r = json.loads(src.read_text())
        fig, ax = figure(figsize=(4, 2.8))
        for i, k in enumerate(("recompute", "reuse")):
            s = r["solutions_per_s"][k]
            ax.bar(i, s["median"], color=("tab:gray", "tab:blue")[i], yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]], capsize=3)
        ax.set_xticks(range(2), ("recompute every prefix", "prefix KV reuse"))
        ax.set_ylabel("beam-search solutions/s")
        sp = r["speedup"]
        ax.set_title(f"beam N={r['n']}, M={r['beam_width']}: {sp['median']:.2f}x (min {sp['min']:.2f}, max {sp['max']:.2f}); "
                     f"identical outputs {r['identical_outputs']:.0%}", fontsize=8)
        stem = save_figure(fig, Path(figures_dir) / f"bench_{name}")
        made.append(Made(stem, (src,), f"Beam search (N={r['n']}) throughput with the prefix's key/value cache reused vs recomputed "
                                       "(median, min-max over alternated rounds)."))
    return made
