"""Figures of the performance benchmarks (``results/bench/*.json``, written by `exp/bench.py`).

One maker per benchmark; each returns [] when its result file is absent. Bars show medians of
the repeated runs, whiskers their min-max range.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from prm.plots import FIGURES, Made, figure, save_figure

SYSTEMS = (("ours", "this project"), ("trl_best", "TRL best (faster precision, no ckpt, length-grouped, faster attention)"), ("trl_defaults", "TRL defaults"))


def _load(results_dir: Path, name: str) -> tuple[dict, Path] | None:
    f = Path(results_dir) / "bench" / f"{name}.json"
    return (json.loads(f.read_text()), f) if f.is_file() else None


def _bar(ax, x: float, s: dict | None, color: str, label: str | None = None) -> None:
    if not s or s.get("median") is None:
        return
    m = s["median"]
    ax.bar(x, m, width=0.25, color=color, label=label, yerr=[[m - s["min"]], [s["max"] - m]], capsize=2)


def _train_figure(results_dir: Path, figures_dir: Path, name: str) -> list[Made]:
    got = _load(results_dir, name)
    if got is None:
        return []
    r, src = got
    backbones = list(r["backbones"])
    fig, axes = figure(1, 2, figsize=(8, 3))
    colors = ("tab:blue", "tab:orange", "tab:gray")
    # measured examples/s (whole epochs since the protocol trains one); older fixed-step files
    # recorded an epoch-equivalent estimate, plotted when present
    first = r["backbones"][backbones[0]]["summary"]["ours"]
    rate = "epoch_examples_per_s" if (first.get("epoch_examples_per_s") or {}).get("median") else "examples_per_s"
    # positions computed per row token (1 + padding, below 1 with shared prefixes); older files: padding
    room = ("positions_per_token", "positions computed per token") if (first.get("positions_per_token") or {}).get("median") else ("padding_fraction", "padding fraction")
    for j, (metric, title) in enumerate(((rate, "training examples/s" + (" (epoch-equivalent)" if rate != "examples_per_s" else "")), room)):
        ax = axes[j]
        for i, b in enumerate(backbones):
            summ = r["backbones"][b]["summary"]
            for k, ((key, label), c) in enumerate(zip(SYSTEMS, colors)):
                _bar(ax, i + (k - 1) * 0.27, summ.get(key, {}).get(metric), c, label if i == 0 else None)
            ratio = r["backbones"][b].get("ratios", {}).get("ours_vs_trl_best", {}).get(rate, {})  # absent when TRL did not run
            if metric == rate and ratio.get("median"):
                top = summ["ours"][metric]["max"]
                ax.annotate(f"{ratio['median']:.2f}x", (i - 0.27, top), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(backbones)), backbones)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    dev = r["machine"].get("gpu") or r["machine"].get("cpu", "cpu")
    fig.suptitle(f"PRM training vs TRL 1.12 PRMTrainer ({dev})", fontsize=9)
    stem = save_figure(fig, Path(figures_dir) / f"bench_{name}")
    return [Made(stem, (src,), f"Training throughput and padding, this project vs TRL's PRMTrainer ({name}); label: median ratio ours/TRL-best.")]


@FIGURES.register("bench_train")
def train_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    # train_sdpa: the same protocol with this project on SDPA attention (its CPU default before eager;
    # exp/bench.py train --attn_implementation sdpa --name train_sdpa)
    return [m for name in ("train", "train_smollm2", "train_sdpa", "gpu_train") for m in _train_figure(results_dir, figures_dir, name)]


@FIGURES.register("bench_prefix")
def prefix_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    got = _load(results_dir, "prefix")
    if got is None:
        return []
    r, src = got
    fig, axes = figure(1, 2, figsize=(6, 2.8))
    names = ("single", "per_prefix")
    for ax, key, title in ((axes[0], "tokens", "tokens per epoch"), (axes[1], "epoch_seconds", "seconds per epoch")):
        ax.bar(range(2), [r[n][key] for n in names], color=("tab:blue", "tab:gray"))
        ax.set_xticks(range(2), ("single pass", "per prefix"))
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{r['solutions']} solutions, {r['steps']} steps, {Path(r['model']).name}: "
                 f"{r['token_ratio']:.2f}x tokens, {r['time_ratio']:.2f}x time; scores equal: {r['scores_equal']}", fontsize=8)
    stem = save_figure(fig, Path(figures_dir) / "bench_prefix")
    return [Made(stem, (src,), "Single-pass training vs the per-prefix layout of the original prm_exp.py: tokens and wall time per epoch.")]


def _score_figure(results_dir: Path, figures_dir: Path, name: str) -> list[Made]:
    got = _load(results_dir, name)
    if got is None:
        return []
    r, src = got
    ns = list(r["by_n"])
    schemes = list(r["by_n"][ns[0]]["solutions_per_s"])
    fig, ax = figure(figsize=(5.5, 3))
    colors = ("tab:gray", "tab:blue", "silver", "tab:cyan")
    for i, n in enumerate(ns):
        for k, (s, c) in enumerate(zip(schemes, colors)):
            _bar(ax, i + (k - 1.5) * 0.2, r["by_n"][n]["solutions_per_s"][s], c, s if i == 0 else None)
    ax.set_xticks(range(len(ns)), [f"N = {n}" for n in ns])
    ax.set_ylabel("solutions scored / s")
    ax.legend(fontsize=7)
    dev = r["machine"].get("gpu") or r["machine"].get("cpu", "cpu")
    ax.set_title(f"best-of-N scoring, {Path(r['model']).name} ({dev})", fontsize=9)
    stem = save_figure(fig, Path(figures_dir) / f"bench_{name}")
    return [Made(stem, (src,), "Best-of-N scoring throughput: naive padded batch vs shared problem prefix (KV cache), fp32 and bf16.")]


def _score_kinds_figure(results_dir: Path, figures_dir: Path, name: str) -> list[Made]:
    got = _load(results_dir, name)
    if got is None:
        return []
    r, src = got
    names = list(r["kinds"])
    fig, ax = figure(figsize=(6, 3))
    for i, n in enumerate(names):
        _bar(ax, i, r["kinds"][n]["speedup"], "tab:blue")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(names)), [f"{r['kinds'][n]['kind']}\n{n[:18]}" for n in names], fontsize=6)
    ax.set_ylabel("speed-up vs model card usage")
    dev = r["machine"].get("gpu") or r["machine"].get("cpu", "cpu")
    ax.set_title(f"scoring, batch {r['batch_size']}, {r['solutions']} solutions, {r['dtype']} ({dev})", fontsize=8)
    stem = save_figure(fig, Path(figures_dir) / f"bench_{name}")
    return [Made(stem, (src,), "Scoring solutions/s of PRM lab's one path over each kind's model-card usage (median, min-max bars).")]


@FIGURES.register("bench_score")
def score_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    return (_score_figure(results_dir, figures_dir, "score") + _score_figure(results_dir, figures_dir, "gpu_score")
            + _score_kinds_figure(results_dir, figures_dir, "score_kinds"))


@FIGURES.register("bench_label_cost")
def label_cost_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    got = _load(results_dir, "label_cost")
    if got is None:
        return []
    r, src = got
    schemes = list(r["schemes"])
    models = list(r["price_table_usd_per_mtok"])
    fig, ax = figure(figsize=(6, 3))
    width = 0.8 / len(models)
    for j, m in enumerate(models):
        vals = [r["schemes"][s]["usd_per_1000_solutions"][m] for s in schemes]
        ax.bar(np.arange(len(schemes)) + (j - (len(models) - 1) / 2) * width, vals, width=width, label=m)
    ax.set_xticks(range(len(schemes)), ["\n".join(textwrap.wrap(s.replace("_", " "), 12)) for s in schemes], fontsize=8)
    ax.set_ylabel("USD per 1000 solutions")
    ax.legend(fontsize=7)
    ax.set_title(f"Claude step grading cost ({r['solutions']} GSM8K solutions, {r['steps']} steps)", fontsize=9)
    stem = save_figure(fig, Path(figures_dir) / "bench_label_cost")
    return [Made(stem, (src,), "Claude grading cost per 1000 solutions at list prices: one request per step vs per solution, with and without "
                 "prompt caching of the grading instructions, Message Batches, and the earlier short rules.")]


@FIGURES.register("bench_efficiency")
def efficiency_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    got = _load(results_dir, "efficiency")
    if got is None:
        return []
    r, src = got
    runs = r["runs"]
    fig, axes = figure(1, 2, figsize=(6, 2.8))
    names = list(runs)
    axes[0].bar(range(len(names)), [runs[n]["achieved_flops_per_s"] / 1e9 for n in names], color="tab:blue", label="training (model FLOPs)")
    axes[0].bar(range(len(names)), [runs[n]["matmul_peak_flops_per_s"] / 1e9 for n in names], color="none", edgecolor="black", label="matmul peak")
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set_ylabel("GFLOP/s")
    axes[0].legend(fontsize=7)
    axes[1].bar(range(len(names)), [100 * runs[n]["mfu"] for n in names], color="tab:orange")
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set_ylabel("MFU (%)")
    fig.suptitle(f"training efficiency, {Path(r['model']).name}", fontsize=9)
    stem = save_figure(fig, Path(figures_dir) / "bench_efficiency")
    return [Made(stem, (src,), "Achieved training FLOP/s (6 x params x tokens + attention) against the matmul peak measured in the same run.")]


def _qlora_figure(results_dir: Path, figures_dir: Path, name: str) -> list[Made]:
    got = _load(results_dir, name)
    if got is None:
        return []
    r, src = got
    fig, axes = figure(1, 2, figsize=(7, 2.8), gridspec_kw={"width_ratios": [3, 1]})
    mem = (("weight_mb", "weights"), ("model_rss_mb", "RSS after load\n(above imports)"), ("train_peak_above_base_mb", "training peak RSS\n(above imports)"))
    for k, (cfg, color) in enumerate((("lora", "tab:gray"), ("qlora", "tab:blue"))):
        label = {"lora": "LoRA, fp32 base", "qlora": "QLoRA, 4-bit NF4 base"}[cfg]
        for i, (m, _) in enumerate(mem):
            _bar(axes[0], i + (k - 0.5) * 0.27, r["summary"][cfg][m], color, label if i == 0 else None)
        _bar(axes[1], (k - 0.5) * 0.27, r["summary"][cfg]["steps_per_s"], color)
    for i, (m, _) in enumerate(mem):
        ratio = r["ratios_qlora_vs_lora"][m]
        if ratio.get("median"):
            axes[0].annotate(f"{ratio['median']:.2f}x", (i + 0.135, r["summary"]["qlora"][m]["max"]), ha="center", va="bottom", fontsize=8)
    axes[0].set_xticks(range(len(mem)), [t for _, t in mem], fontsize=7)
    axes[0].set_ylabel("MiB")
    axes[0].legend(fontsize=7)
    axes[1].set_xticks([0], ["steps/s"], fontsize=7)
    dev = r["machine"].get("gpu") or r["machine"].get("cpu", "cpu")
    ckpt = "with" if r["spec"].get("activation_checkpointing") else "without"
    fig.suptitle(f"QLoRA vs LoRA, {Path(r['model']).name} PRM, {ckpt} activation checkpointing ({dev}); label: median ratio", fontsize=8)
    stem = save_figure(fig, Path(figures_dir) / f"bench_{name}")
    return [Made(stem, (src,), f"Memory of a LoRA PRM on fp32 base weights vs QLoRA on 4-bit NF4 weights, {ckpt} activation checkpointing: "
                               "weights, RSS after loading and the training peak; training steps/s.")]


@FIGURES.register("bench_qlora")
def qlora_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    # qlora_no_ckpt: the same protocol keeping activations (exp/bench.py qlora --activation_checkpointing false --name qlora_no_ckpt)
    return [m for name in ("qlora", "qlora_no_ckpt") for m in _qlora_figure(results_dir, figures_dir, name)]


@FIGURES.register("bench_serve")
def serve_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    got = _load(results_dir, "serve")
    if got is None:
        return []
    r, src = got
    names = [n for n in ("in_process", "server_unbatched", "server_batched", "server_batched_bs4") if n in r["schemes"]]
    labels = {"in_process": "in-process\n1 at a time", "server_unbatched": "server\nunbatched", "server_batched": "server\nbatched",
              "server_batched_bs4": "server batched\n(sorted, 4/pass)"}
    colors = ("tab:gray", "tab:orange", "tab:blue", "tab:green")
    fig, axes = figure(1, 2, figsize=(8, 2.8))
    for j, (metric, title) in enumerate((("requests_per_s", "requests/s"), ("p95_ms", "p95 latency (ms)"))):
        for i, (n, c) in enumerate(zip(names, colors)):
            _bar(axes[j], i, r["schemes"][n][metric], c)
        axes[j].set_xticks(range(len(names)), [labels[n] for n in names], fontsize=7)
        axes[j].set_title(title, fontsize=9)
    fig.suptitle(f"scoring server, {r['clients']} concurrent clients, {Path(r['model']).name}, {r['machine'].get('device', 'cpu')}", fontsize=9)
    stem = save_figure(fig, Path(figures_dir) / "bench_serve")
    return [Made(stem, (src,), "Scoring server under concurrent load vs the scorer in-process one request at a time; bars: medians of rounds, whiskers min-max.")]


@FIGURES.register("bench_mc_search")
def mc_search_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    got = _load(results_dir, "mc_search")
    if got is None:
        return []
    r, src = got
    groups = (("all", "all solutions"), ("wrong_answer", "wrong final answer"))
    fig, axes = figure(1, 2, figsize=(7, 2.8))
    for ax, metric, title in ((axes[0], "rollouts", "rollouts per labeled solution"), (axes[1], "tokens", "generated tokens per labeled solution")):
        for i, (g, _) in enumerate(groups):
            for k, (s, c) in enumerate((("linear", "tab:gray"), ("binary", "tab:blue"))):
                st = r[g][s][metric]
                if st.get("mean") is not None:
                    ax.bar(i + (k - 0.5) * 0.35, st["mean"], width=0.33, color=c, label=s if i == 0 else None)
            ratio = r[g][f"{'rollout' if metric == 'rollouts' else 'token'}_ratio_linear_over_binary"]
            if ratio and r[g]["linear"][metric]["mean"] is not None:
                ax.annotate(f"{ratio:.2f}x", (i, r[g]["linear"][metric]["mean"]), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(groups)), [f"{t}\n(n={r[g]['solutions']}, disagree {100 * (r[g]['disagreement_rate'] or 0):.0f}%)" for g, t in groups], fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Monte-Carlo first-error search, {Path(str(r['model'])).name}, {r['n_rollouts_per_prefix']} rollouts a prefix, "
                 f">= {r['min_steps']} steps; label: linear / binary", fontsize=8)
    stem = save_figure(fig, Path(figures_dir) / "bench_mc_search")
    return [Made(stem, (src,), "Rollouts and generated tokens per labeled solution: OmegaPRM's binary search for the first error vs the "
                               "linear scan of every prefix, on the same solutions and rollouts; disagreement: share with another first error.")]
