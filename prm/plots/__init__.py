"""Figures from committed result files, shared by `exp/make_figures.py` and the notebooks.

Each figure maker is registered in FIGURES under a name, reads only files under `results/`, and
returns a `Made` for each figure it wrote. `save_figure` writes PNG and PDF without timestamps or
software tags, so a rerun on the same library versions rebuilds identical bytes.

Figure makers live in topic modules (`prm/plots/bench.py`, `prm/plots/dreamprm.py`, ...); each is
imported by `load_all()` so that registering needs no central list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: scripts, CI and notebooks all render off-screen
import matplotlib.pyplot as plt

from prm.registry import Registry


@dataclass(frozen=True)
class Made:
    """One written figure: its stem (path without suffix), the result files it was drawn from, a caption."""

    stem: Path
    sources: tuple[Path, ...]
    caption: str


# A maker takes (results_dir, figures_dir) and returns what it wrote; it returns [] when the runs it
# needs are absent, so a partial results tree still works.
FigureMaker = Callable[[Path, Path], list[Made]]
FIGURES: Registry[FigureMaker] = Registry("figure")

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "prm-lab",
}


def figure(*args, **kwargs) -> tuple[plt.Figure, object]:
    """`plt.subplots` under the project style."""
    with plt.rc_context(STYLE):
        return plt.subplots(*args, **kwargs)


def save_figure(fig: plt.Figure, stem: Path) -> Path:
    """Write `stem.png` and `stem.pdf` deterministically and close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        fig.savefig(stem.with_suffix(".png"), metadata={"Software": None}, bbox_inches="tight")
        fig.savefig(stem.with_suffix(".pdf"), metadata={"Creator": None, "Producer": None, "CreationDate": None},
                    bbox_inches="tight")
    plt.close(fig)
    return stem


def load_all() -> Registry[FigureMaker]:
    """Import every topic module of this package so that its makers register themselves."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return FIGURES
