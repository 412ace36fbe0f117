"""Reading the results tree: `results/<exp>/<run>/{config.json, metrics.json, log.jsonl,
predictions.jsonl}` (written through `prm.io.start_run`). Figures and notebooks read runs only
through here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prm.io import iter_json_rows


@dataclass
class Run:
    path: Path

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def _json(self, name: str) -> dict:
        f = self.path / name
        return json.loads(f.read_text()) if f.is_file() else {}

    @property
    def config(self) -> dict:
        return self._json("config.json")

    @property
    def metrics(self) -> dict:
        return self._json("metrics.json")

    def _rows(self, name: str) -> list[dict]:
        f = self.path / name
        return [row for _, row in iter_json_rows(f)] if f.is_file() else []

    @property
    def log(self) -> list[dict]:
        return self._rows("log.jsonl")

    @property
    def predictions(self) -> list[dict]:
        return self._rows("predictions.jsonl")

    def scored_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """(score, label in {0, 1}) of every labeled and scored step in the predictions; soft
        labels count as correct from 0.5."""
        s, y = [], []
        for row in self.predictions:
            for lab, sc in zip(row.get("labels") or [], row.get("step_scores") or []):
                if lab is not None and sc is not None:
                    s.append(sc)
                    y.append(1.0 if lab >= 0.5 else 0.0)
        return np.asarray(s, dtype=float), np.asarray(y, dtype=float)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory {path}")
    return Run(path)


def find_runs(results: str | Path, exp: str | None = None, needs: str = "metrics.json") -> Iterator[Run]:
    """Runs (sorted by path) under ``results/<exp>/`` (every experiment when None) that hold ``needs``."""
    for f in sorted(Path(results).glob(f"{exp or '*'}/*/{needs}")):
        if f.parent.parent.name != "figures":
            yield Run(f.parent)
