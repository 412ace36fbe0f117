"""Figures of PRM runs: method x reward comparison, training curves, calibration, label balance,
ProcessBench-style F1, best-of-N accuracy vs N, and API cost. Each reads the standard run files
(`results/<exp>/<run>/{metrics.json, log.jsonl, predictions.jsonl}`) and skips runs that lack them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from prm.plots import FIGURES, Made, figure, save_figure
from prm.results import Run, find_runs


@FIGURES.register("method_reward")
def method_reward(results: Path, out: Path) -> list[Made]:
    """Held-out step metrics of the main job's runs (method x reward)."""
    rs = [r for r in find_runs(results, "prm_exp") if "steps" in r.metrics]
    if not rs:
        return []
    keys = [("auroc", "AUROC"), ("accuracy", "accuracy"), ("incorrect_f1", "F1 (wrong steps)"), ("f1_weighted", "F1 (weighted)")]
    fig, ax = figure(figsize=(6.4, 3.2))
    width = 0.8 / len(rs)
    for i, r in enumerate(rs):
        s = r.metrics["steps"]
        vals = [s.get(k) for k, _ in keys]
        xs = np.arange(len(keys)) + (i - (len(rs) - 1) / 2) * width
        bars = ax.bar(xs, [v if v is not None else 0 for v in vals], width, label=f"{r.path.name} (n={s.get('n_steps')})")
        for b, v in zip(bars, vals):
            if v is None:  # e.g. AUROC with a single class among held-out labels
                ax.text(b.get_x() + b.get_width() / 2, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(keys)), [t for _, t in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out steps")
    ax.set_title("Main job: method x reward")
    ax.legend(fontsize=7)
    return [Made(save_figure(fig, out / "method_reward"), tuple(r.path / "metrics.json" for r in rs),
                 "held-out step AUROC, accuracy and F1 of each prm_exp run (n/a: one class only)")]


@FIGURES.register("training_curves")
def training_curves(results: Path, out: Path) -> list[Made]:
    """Training loss against optimizer step, one panel per experiment."""
    by_exp: dict[str, list[tuple[Run, list[tuple[int, float]]]]] = {}
    for r in find_runs(results, needs="log.jsonl"):
        pts = [(row["step"], row["loss"]) for row in r.log if "loss" in row and "step" in row]
        if pts:
            by_exp.setdefault(r.path.parent.name, []).append((r, pts))
    if not by_exp:
        return []
    fig, axes = figure(1, len(by_exp), figsize=(3.4 * len(by_exp), 2.8), squeeze=False)
    for ax, (exp, items) in zip(axes[0], sorted(by_exp.items())):
        for r, pts in items:
            x, y = zip(*pts)
            ax.plot(x, y, label=r.path.name, lw=1.2)
        ax.set_title(exp)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        # below the panel: a dozen runs in one experiment would cover their own curves
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2 if len(items) > 6 else 1, frameon=False)
    srcs = tuple(r.path / "log.jsonl" for items in by_exp.values() for r, _ in items)
    return [Made(save_figure(fig, out / "training_curves"), srcs, "training loss per optimizer step of every run with a log")]


def reliability(ax, scores: np.ndarray, labels: np.ndarray, name: str, bins: int = 10) -> float:
    """Draw a reliability curve (mean score vs share correct per score bin with >= 5 steps) on
    ``ax``; returns the expected calibration error."""
    if not ax.get_lines():
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
        ax.set(xlabel="mean predicted P(step correct)", ylabel="share of steps labeled correct", xlim=(0, 1), ylim=(0, 1),
               title="Calibration of step scores")
    idx = np.clip(np.digitize(scores, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    xs, ys, ece = [], [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += abs(scores[m].mean() - labels[m].mean()) * m.sum() / len(scores)
        if m.sum() >= 5:  # fewer steps than this make a bin noise
            xs.append(scores[m].mean())
            ys.append(labels[m].mean())
    ax.plot(xs, ys, marker="o", ms=3, label=f"{name} (ECE {ece:.2f}, n={len(scores)})")
    return float(ece)


@FIGURES.register("calibration")
def calibration(results: Path, out: Path, bins: int = 10) -> list[Made]:
    """Reliability diagram of step scores: mean score vs share of correct steps per score bin."""
    rs = [r for r in find_runs(results, needs="predictions.jsonl") if len(r.scored_steps()[0])]
    if not rs:
        return []
    fig, ax = figure(figsize=(4.2, 4.0))
    for r in rs:
        reliability(ax, *r.scored_steps(), r.name, bins)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return [Made(save_figure(fig, out / "calibration"), tuple(r.path / "predictions.jsonl" for r in rs),
                 "reliability diagram of step scores (bins with at least 5 steps) and expected calibration error")]


@FIGURES.register("label_balance")
def label_balance(results: Path, out: Path) -> list[Made]:
    """Share of steps labeled correct in the training data that each run generated."""
    rs = [r for r in find_runs(results) if "correct_step_share" in r.metrics.get("data", {})]
    if not rs:
        return []
    fig, ax = figure(figsize=(5, 0.5 + 0.45 * len(rs)))
    for i, r in enumerate(rs):
        d = r.metrics["data"]
        pos = d["correct_step_share"]
        ax.barh(i, pos, color="tab:green")
        ax.barh(i, 1 - pos, left=pos, color="tab:red")
        ax.text(1.01, i, f"{d['steps']} steps, {d['solutions']} solutions", va="center", fontsize=7)
    ax.set_yticks(range(len(rs)), [r.name for r in rs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of labeled steps: correct (green) / wrong (red)")
    ax.set_title("Label balance")
    return [Made(save_figure(fig, out / "label_balance"), tuple(r.path / "metrics.json" for r in rs), "share of correct vs wrong step labels per generated dataset")]


@FIGURES.register("processbench")
def processbench(results: Path, out: Path) -> list[Made]:
    """ProcessBench-style first-error F1 per subset (test split, threshold chosen on dev)."""
    rs = [r for r in find_runs(results) if "subsets" in r.metrics.get("test", {})]
    if not rs:
        return []
    subsets = sorted({s for r in rs for s in r.metrics["test"]["subsets"]})
    fig, ax = figure(figsize=(1.5 + 1.4 * len(subsets), 3.0))
    width = 0.8 / len(rs)
    for i, r in enumerate(rs):
        t = r.metrics["test"]
        xs = np.arange(len(subsets)) + (i - (len(rs) - 1) / 2) * width
        # tab20: more than ten runs would repeat the default cycle's colours
        ax.bar(xs, [t["subsets"].get(s, {}).get("f1", 0) for s in subsets], width, label=f"{r.name} (threshold {t['threshold']:.2f})",
               color=colormaps["tab20"](i % 20))
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_ylabel("first-error F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the bars: many runs would cover them
    ax.set_title("ProcessBench-style F1")
    return [Made(save_figure(fig, out / "processbench"), tuple(r.path / "metrics.json" for r in rs), "first-error F1 per subset, threshold chosen on a dev split")]


@FIGURES.register("best_of_n")
def best_of_n(results: Path, out: Path) -> list[Made]:
    """Best-of-N accuracy vs N with bootstrap 95% bands: PRM aggregates, majority vote, PRM-weighted vote."""
    made = []
    for r in find_runs(results):
        m = r.metrics
        if "methods" not in m or "ns" not in m:
            continue
        fig, ax = figure(figsize=(5, 3.4))
        for name, rows in sorted(m["methods"].items()):
            n = [p["n"] for p in rows]
            ls = ":" if name == "oracle" else ("--" if name == "majority" else "-")
            line, = ax.plot(n, [p["accuracy"] for p in rows], ls=ls, marker="o", ms=3, label=name)
            ax.fill_between(n, [p["ci_low"] for p in rows], [p["ci_high"] for p in rows], color=line.get_color(), alpha=0.12)
        ax.set_xscale("log", base=2)
        ax.set_xticks(m["ns"], [str(n) for n in m["ns"]])
        ax.set_xlabel("N candidates")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Best-of-N: {r.name} ({m['n_problems']} problems)")
        ax.legend(fontsize=6, ncol=2)
        stem = out / f"best_of_n_{r.path.parent.name}_{r.path.name}"
        made.append(Made(save_figure(fig, stem), (r.path / "metrics.json",), "best-of-N accuracy vs N with bootstrap 95% bands"))
    return made


@FIGURES.register("api_cost")
def api_cost(results: Path, out: Path) -> list[Made]:
    """Claude spend per run and stage (generation, grading), when runs used the API."""
    rows = []
    for r in find_runs(results):
        for stage, u in sorted(r.metrics.get("api_usage", {}).items()):
            if isinstance(u, dict) and u.get("cost_usd") is not None:
                rows.append((r, stage, u))
    if not rows:
        return []
    fig, ax = figure(figsize=(5.5, 0.6 + 0.4 * len(rows)))
    labels = [f"{r.name}: {stage}" for r, stage, _ in rows]
    ax.barh(range(len(rows)), [u["cost_usd"] for _, _, u in rows], color="tab:purple")
    for i, (_, _, u) in enumerate(rows):
        ax.text(u["cost_usd"], i, f" {u['requests']} req, {u['input_tokens'] + u.get('cache_read_tokens', 0):,} in / {u['output_tokens']:,} out",
                va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), labels)
    ax.set_xlabel("USD")
    ax.set_title("Claude API cost")
    return [Made(save_figure(fig, out / "api_cost"), tuple(sorted({r.path / "metrics.json" for r, _, _ in rows})), "Claude API spend per run and stage")]
