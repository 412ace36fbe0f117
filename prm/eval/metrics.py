"""Step-level metrics: accuracy, weighted and per-class precision/recall/F1, AUROC."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from prm.schema import label_names

log = logging.getLogger(__name__)


def step_metrics(labels: Sequence[float], probs: np.ndarray, label_scheme: str, threshold: float = 0.5) -> dict:
    """Metrics of step predictions.

    Args:
        labels: one label per scored step (class ids, or soft targets in [0, 1]).
        probs: (n_steps, n_classes) class probabilities, or (n_steps,) P(correct).
        label_scheme: binary, ternary or soft. Soft targets count as correct when >= 0.5.
        threshold: P(correct) above which a binary/soft step is predicted correct.

    ``single_class`` is None, or the one class all labels have (then ``auroc`` is None).
    """
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    if y.size == 0:
        return {"n_steps": 0}
    if label_scheme == "ternary":
        pred = p.argmax(-1)
        y_cls = y.astype(int)
        pos = p[:, 2]
        y_bin = (y_cls == 2).astype(int)
        names = label_names("ternary")
    else:
        pos = p[:, 1] if p.ndim == 2 else p
        pred = (pos >= threshold).astype(int)
        y_cls = (y >= 0.5).astype(int)
        y_bin = y_cls
        names = label_names("binary")
    # imported here: sklearn at module level cost every trainer start ~1 s and ~40 MB
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    classes = list(range(len(names)))
    out: dict = {"n_steps": int(y.size), "accuracy": float((pred == y_cls).mean())}
    p_w, r_w, f_w, _ = precision_recall_fscore_support(y_cls, pred, labels=classes, average="weighted", zero_division=0)
    out.update(precision_weighted=float(p_w), recall_weighted=float(r_w), f1_weighted=float(f_w))
    p_c, r_c, f_c, s_c = precision_recall_fscore_support(y_cls, pred, labels=classes, zero_division=0)
    for k, name in enumerate(names):
        out[f"{name}_precision"] = float(p_c[k])
        out[f"{name}_recall"] = float(r_c[k])
        out[f"{name}_f1"] = float(f_c[k])
        out[f"{name}_support"] = int(s_c[k])
    # AUROC of P(correct) against "step is correct" (positive class vs rest for ternary)
    out["auroc"] = float(roc_auc_score(y_bin, pos)) if 0 < y_bin.sum() < len(y_bin) else None
    # One class only: accuracy then rewards predicting that class and AUROC is undefined; say so
    # in the metrics (``single_class``: the class every label has) and in the log.
    out["single_class"] = None
    if out["auroc"] is None:
        out["single_class"] = ("positive" if y_bin[0] else "not positive") if label_scheme == "ternary" else names[int(y_bin[0])]
        log.warning("all %d labels are '%s': one class only, so AUROC is undefined and accuracy/F1 do not show "
                    "whether the model tells correct from incorrect", y.size, out["single_class"])
    if label_scheme == "soft":
        out["soft_mse"] = float(np.mean((pos - y) ** 2))
    return out


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class): rows true, columns predicted, classes 0..num_classes-1."""
    out = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(out, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return out.tolist()


def bootstrap_auroc(labels: Sequence[float], scores: Sequence[float], groups: Sequence[str] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """AUROC of ``scores`` against binarized ``labels`` (>= 0.5) with a bootstrap 95% interval that
    resamples whole ``groups`` (e.g. questions: the steps of one question are not independent).
    Resamples left with one class are skipped; None values when the data hold one class."""
    from sklearn.metrics import roc_auc_score

    y = (np.asarray(labels, dtype=float) >= 0.5).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0 or y.min() == y.max():
        return {"auroc": None, "ci_low": None, "ci_high": None, "n_groups": 0}
    g = np.asarray(groups if groups is not None else range(len(y)))
    names = np.unique(g)
    members = [np.flatnonzero(g == n) for n in names]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(names), size=len(names))])
        if y[idx].min() != y[idx].max():
            aucs.append(roc_auc_score(y[idx], s[idx]))
    return {"auroc": float(roc_auc_score(y, s)), "ci_low": float(np.percentile(aucs, 2.5)) if aucs else None,
            "ci_high": float(np.percentile(aucs, 97.5)) if aucs else None, "n_groups": len(names)}
