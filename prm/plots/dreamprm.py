"""DreamPRM figures (`exp/dreamprm_minif2f.py` runs).

- ``dreamprm_weights``: for each reweighted run, the learned data weights over outer steps, one
  line per domain (``results/dreamprm_minif2f/<run>/weights.jsonl``).
- ``dreamprm_compare``: held-out and meta solution AUROC of every run, reweighted and baseline side
  by side (``metrics.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from prm.io import read_jsonl
from prm.plots import FIGURES, Made, figure, save_figure

EXPERIMENT = "dreamprm_minif2f"


def plot_weights(run_dir: str | Path, stem: str | Path) -> Path | None:
    """The weight trajectory of one run; None when the run has none (a baseline)."""
    f = Path(run_dir) / "weights.jsonl"
    rows = read_jsonl(f) if f.is_file() else []
    rows = [r for r in rows if r.get("weights")]
    if not rows:
        return None
    fig, ax = figure(figsize=(5, 3))
    steps = [r["step"] for r in rows]
    for d in sorted(rows[-1]["weights"]):
        ax.plot(steps, [r["weights"].get(d) for r in rows], label=d, lw=1.5)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("outer step")
    ax.set_ylabel("weight (mean 1)")
    ax.set_title(f"DreamPRM data weights: {Path(run_dir).name}", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return save_figure(fig, stem)


@FIGURES.register("dreamprm_weights")
def weight_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    made = []
    for run in sorted(p for p in (Path(results_dir) / EXPERIMENT).glob("*") if p.is_dir()):
        stem = plot_weights(run, Path(figures_dir) / f"{EXPERIMENT}_{run.name}_weights")
        if stem is not None:
            made.append(Made(stem, (run / "weights.jsonl",), f"Learned per-domain data weights over outer steps, run {run.name} ({EXPERIMENT})."))
    return made


@FIGURES.register("dreamprm_compare")
def compare_figure(results_dir: Path, figures_dir: Path) -> list[Made]:
    runs = []
    for run in sorted(p for p in (Path(results_dir) / EXPERIMENT).glob("*") if (p / "metrics.json").is_file()):
        m = json.loads((run / "metrics.json").read_text())
        if m.get("heldout", {}).get("auroc") is not None:
            runs.append((run, m))
    if not runs:
        return []
    fig, ax = figure(figsize=(1.5 + 1.2 * len(runs), 3))
    width = 0.38
    for k, (split, color) in enumerate((("meta", "tab:blue"), ("heldout", "tab:orange"))):
        vals = [m[split].get("auroc") or 0.0 for _, m in runs]
        xs = [i + (k - 0.5) * width for i in range(len(runs))]
        ax.bar(xs, vals, width, label=split, color=color)
        for x, v in zip(xs, vals):
            ax.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=6)
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_xticks(range(len(runs)), [r.name for r, _ in runs], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("solution AUROC")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, frameon=False)
    stem = save_figure(fig, Path(figures_dir) / f"{EXPERIMENT}_compare")
    return [Made(stem, tuple(r / "metrics.json" for r, _ in runs), f"Solution-level AUROC (score vs meta_label) on the meta set and held-out miniF2F test, per run ({EXPERIMENT}).")]
