"""Confusion matrices of step classifiers (`exp/prm800k_bert.py` runs).

Reads ``results/prm800k_bert/<run>/metrics.json`` (``confusion_matrix``: rows true, columns
predicted; ``label_names``; ``majority_baseline``) and draws one heat map per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prm.plots import FIGURES, Made, figure, save_figure

EXPERIMENT = "prm800k_bert"


def draw_confusion(metrics: dict, title: str):
    """A heat map of row-normalized counts, each cell labeled with its count."""
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)  # (true, predicted)
    names = metrics["label_names"]
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = figure(figsize=(1.2 + 0.9 * len(names), 1.0 + 0.8 * len(names)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    b = metrics.get("majority_baseline", {})
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f} (majority {b.get('accuracy', float('nan')):.3f})", fontsize=8)
    return fig


def plot_confusion(run_dir: str | Path, stem: str | Path | None = None) -> Path | None:
    """Draw ``run_dir``'s confusion matrix to ``stem`` (default ``run_dir/confusion``); None when absent."""
    run_dir = Path(run_dir)
    f = run_dir / "metrics.json"
    if not f.is_file():
        return None
    metrics = json.loads(f.read_text())
    if "confusion_matrix" not in metrics:
        return None
    return save_figure(draw_confusion(metrics, run_dir.name), Path(stem) if stem else run_dir / "confusion")


@FIGURES.register("prm800k_bert_confusion")
def confusion_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    made = []
    for run in sorted(p for p in (Path(results_dir) / EXPERIMENT).glob("*") if (p / "metrics.json").is_file()):
        stem = plot_confusion(run, Path(figures_dir) / f"{EXPERIMENT}_{run.name}_confusion")
        if stem is not None:
            made.append(Made(stem, (run / "metrics.json",), f"Held-out step confusion matrix of the {run.name} run ({EXPERIMENT})."))
    return made
