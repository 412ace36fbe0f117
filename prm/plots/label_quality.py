"""Label quality report figures (`exp/label_quality.py` runs).

Reads ``results/label_quality/<run>/metrics.json`` and draws, per run, the pairwise first-error
agreement of the labelers (human labels included where the data has them) as a heat map, next to
each labeler's cost per labeled solution: generated rollout tokens and API tokens (bars), with
rollouts, USD per 1000 solutions and wall milliseconds written on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prm.plots import FIGURES, Made, figure, save_figure

EXPERIMENT = "label_quality"


def draw_label_quality(metrics: dict, title: str):
    """Agreement heat map (exact first error; "error vs no error" in brackets) and cost bars."""
    pw = metrics["pairwise"]
    names = pw["labelers"]
    exact = np.array([[np.nan if pw["exact"][a][b] is None else pw["exact"][a][b] for b in names] for a in names], dtype=float)
    fig, (ax, bx) = figure(1, 2, figsize=(4.2 + 1.1 * len(names), 0.9 + 0.7 * len(names)), gridspec_kw={"width_ratios": [1.2, 1]})
    ax.imshow(exact, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if not np.isnan(exact[i, j]):
                e = pw["error_vs_no_error"][a][b]
                ax.text(j, i, f"{exact[i, j]:.2f}\n({e:.2f})", ha="center", va="center", fontsize=7,
                        color="white" if exact[i, j] > 0.6 else "black")
    ax.set_title("first-error agreement\nexact (error vs no error)", fontsize=8)

    labelers = metrics["labelers"]
    costs = [metrics["per_labeler"][n].get("cost", {}) for n in labelers]
    gen = [c.get("generated_tokens_per_solution") or 0.0 for c in costs]
    api = [(c.get("api_input_tokens_per_solution") or 0.0) + (c.get("api_output_tokens_per_solution") or 0.0) for c in costs]
    x = np.arange(len(labelers))
    bx.bar(x - 0.2, gen, 0.4, label="rollout tokens")
    bx.bar(x + 0.2, api, 0.4, label="API tokens")
    top = max(gen + api + [1.0])
    for k, c in enumerate(costs):
        usd = c.get("usd_per_1000_solutions")
        text = f"{c.get('rollouts_per_solution', 0):.1f} rollouts\n" + ("USD ?" if usd is None else f"${usd:.2f}/1k")
        if c.get("seconds_per_solution") is not None:
            text += f"\n{1000 * c['seconds_per_solution']:.0f} ms"
        bx.text(k, max(gen[k], api[k]) + 0.02 * top, text, ha="center", va="bottom", fontsize=7)
    bx.set_xticks(x, labelers, rotation=30, ha="right")
    bx.set_ylim(0, top * 1.35)
    bx.set_ylabel("tokens per labeled solution")
    bx.legend(fontsize=7, loc="upper left")
    bx.set_title("cost per labeled solution", fontsize=8)
    fig.suptitle(f"{title}: {metrics['solutions']} solutions", fontsize=9, y=1.06)
    return fig


@FIGURES.register("label_quality")
def label_quality_figures(results_dir: Path, figures_dir: Path) -> list[Made]:
    made = []
    for run in sorted(p for p in (Path(results_dir) / EXPERIMENT).glob("*") if (p / "metrics.json").is_file()):
        metrics = json.loads((run / "metrics.json").read_text())
        if "pairwise" not in metrics:
            continue
        stem = save_figure(draw_label_quality(metrics, run.name), Path(figures_dir) / f"{EXPERIMENT}_{run.name}")
        made.append(Made(stem, (run / "metrics.json",), f"Labelers' first-error agreement (with human labels where they exist) and cost "
                                                        f"per labeled solution ({EXPERIMENT}/{run.name})."))
    return made
