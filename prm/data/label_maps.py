"""Class names <-> class ids for step classifiers (the BMUq API's label maps), and rows of any
supported shape -> stepwise records whose labels are the model's class ids.

A label map names the classes, ``{name: id}`` with ids 0..n-1; the defaults follow the schemes
(ternary: negative/neutral/positive, binary: incorrect/correct). A custom map may order the classes
differently and use other names: `ALIASES` says which names stand for which class of stepwise data,
so ``{"correct": 0, "unclear": 1, "incorrect": 2}`` applies to PRM800K's ternary ratings.
"""

from __future__ import annotations

import json
from typing import Any

import datasets
import numpy as np

from prm.schema import BINARY_NAMES, TERNARY_NAMES

DEFAULT_LABEL_MAPS = {3: dict(zip(TERNARY_NAMES, range(3))), 2: dict(zip(BINARY_NAMES, range(2)))}
# Names a custom label_map may use for the classes of stepwise data (so that e.g.
# {"correct": 0, "unclear": 1, "incorrect": 2} applies to PRM800K's ternary labels).
ALIASES = {
    "positive": ("positive", "correct", "good", "+", "pos"),
    "neutral": ("neutral", "unclear", "ok", "neu"),
    "negative": ("negative", "incorrect", "wrong", "bad", "-", "neg"),
}
ALIASES["correct"], ALIASES["incorrect"] = ALIASES["positive"], ALIASES["negative"]


class LabelError(ValueError):
    """A label or label map that does not fit the model (one line: where, what, what is known)."""


def parse_label_map(value: Any, num_labels: int) -> dict[str, int]:
    """``{name: id}`` from a dict, a JSON string or ``name=id,...``; ids must be 0..num_labels-1."""
    if value is None or value == "":
        return dict(DEFAULT_LABEL_MAPS[num_labels])
    if isinstance(value, str):
        s = value.strip()
        try:
            value = json.loads(s) if s.startswith("{") else {k.strip(): int(v) for k, v in (p.split("=", 1) for p in s.split(",") if p.strip())}
        except (ValueError, json.JSONDecodeError) as e:
            raise LabelError(f"label_map {s!r}: expected JSON or name=id,... ({e})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()):
        raise LabelError(f"label_map must map names to integer ids, got {value!r}")
    ids = sorted(set(value.values()))
    if ids != list(range(num_labels)) or len(value) != num_labels:
        raise LabelError(f"label_map {value} does not fit num_labels={num_labels}: it needs one name per class id 0..{num_labels - 1}")
    return dict(value)


def _scheme_ids(scheme: str, label_map: dict[str, int], where: str) -> list[int]:
    """Model class id of each class of a stepwise scheme (ternary 0/1/2, binary 0/1), via aliases."""
    names = {"ternary": TERNARY_NAMES, "binary": BINARY_NAMES}.get(scheme)
    if names is None:
        raise LabelError(f"{where}: label scheme '{scheme}' cannot train a classifier (use hard labels: binary or ternary)")
    if len(names) != len(label_map):
        raise LabelError(f"{where}: {scheme} labels ({len(names)} classes) but num_labels={len(label_map)}"
                         + ("; load PRM800K with label_scheme=binary, or use num_labels 3" if scheme == "ternary" else "; use num_labels 2"))
    out = []
    for n in names:
        hits = [label_map[a] for a in ALIASES[n] if a in label_map]
        if len(hits) != 1:
            raise LabelError(f"{where}: {scheme} class '{n}' has {'no' if not hits else 'several'} name in label_map {label_map} (accepted: {', '.join(ALIASES[n])})")
        out.append(hits[0])
    return out


def label_id(value: Any, label_map: dict[str, int], where: str) -> int:
    """Class id of a label given by name (or as an id already in range)."""
    if isinstance(value, str):
        if value in label_map:
            return label_map[value]
        raise LabelError(f"{where}: label {value!r} is not in label_map (known: {', '.join(label_map)})")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(label_map):
        return int(value)
    raise LabelError(f"{where}: label {value!r} is neither a name in label_map ({', '.join(label_map)}) nor a class id < {len(label_map)}")


def prepare_records(data: Any, label_map: dict[str, int], num_labels: int) -> datasets.Dataset:
    """Rows -> ``{prompt, completions, labels (class ids or None), label_scheme, id}``.

    Accepts stepwise records (`prm.data.load` output), flat ``{text, label}`` rows (one step each,
    label by name or id; optional ``prompt``), or raw PRM800K rows (``question``/``label``)."""
    if isinstance(data, datasets.IterableDataset):
        data = list(data)
    rows = data.to_list() if isinstance(data, datasets.Dataset) else list(data)
    if not rows:
        raise ValueError("prepare_dataset: no rows")
    cols = set(rows[0])
    scheme = "ternary" if num_labels == 3 else "binary"
    out = []
    if {"question", "label"} <= cols:  # raw PRM800K
        from prm.data import convert_rows

        rows = list(convert_rows("prm800k", ((f"row {i}", r) for i, r in enumerate(rows)), label_scheme=scheme))
        cols = set(rows[0])
    if "label_scheme" in cols:
        maps: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            s = r["label_scheme"]
            if s not in maps:
                maps[s] = _scheme_ids(s, label_map, f"row {i} ({r.get('id') or 'no id'})")
            labs = [None if v is None else maps[s][int(v)] for v in r["labels"]]
            out.append({"prompt": r["prompt"], "completions": list(r["completions"]), "labels": labs, "id": str(r.get("id") or i)})
    elif {"text", "label"} <= cols:
        for i, r in enumerate(rows):
            out.append({"prompt": str(r.get("prompt") or ""), "completions": [r["text"]], "labels": [label_id(r["label"], label_map, f"row {i}")], "id": str(r.get("id", i))})
    else:
        raise ValueError(f"prepare_dataset: cannot read rows with fields {sorted(cols)} (stepwise records, text/label rows, or raw PRM800K rows)")
    for r in out:
        r["label_scheme"] = scheme
        r["labels"] = [None if v is None else float(v) for v in r["labels"]]
    feats = datasets.Features({"prompt": datasets.Value("string"), "completions": datasets.List(datasets.Value("string")),
                               "labels": datasets.List(datasets.Value("float64")), "id": datasets.Value("string"), "label_scheme": datasets.Value("string")})
    return datasets.Dataset.from_list(out, features=feats)
