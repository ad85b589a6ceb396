"""Classification metrics: accuracy, macro P/R/F1, per-class P/R/F1, expected calibration error (ECE)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["classification_metrics", "confusion_pairs", "expected_calibration_error"]


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence with equal-width bins (Guo et al., 2017)."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_metrics(gold: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Metrics of predictions ``proba`` (n, C over ``classes``) against gold labels.

    Returns ``{accuracy, macro_precision, macro_recall, macro_f1, ece, n, per_class: {label: {precision,
    recall, f1, support}}}``. Macro averages run over every class in ``classes``.
    """
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(g, -1) for g in gold])
    pred = proba.argmax(axis=1)
    per_class = {}
    ps, rs, fs = [], [], []
    for i, c in enumerate(classes):
        tp = int(((pred == i) & (y == i)).sum())
        fp = int(((pred == i) & (y != i)).sum())
        fn = int(((pred != i) & (y == i)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_class[c] = {"precision": p, "recall": r, "f1": f, "support": int((y == i).sum())}
        ps.append(p)
        rs.append(r)
        fs.append(f)
    return {
        "n": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_precision": float(np.mean(ps)),
        "macro_recall": float(np.mean(rs)),
        "macro_f1": float(np.mean(fs)),
        "ece": expected_calibration_error(proba, y) if len(y) else 0.0,
        "per_class": per_class,
    }


def confusion_pairs(gold: Sequence[str], predicted: Sequence[str]) -> dict[tuple[str, str], int]:
    """Counts of (gold, predicted) for every error."""
    out: dict[tuple[str, str], int] = {}
    for g, p in zip(gold, predicted, strict=True):
        if g != p:
            out[(g, p)] = out.get((g, p), 0) + 1
    return out


def bootstrap_macro_f1(
    gold: Sequence[str], preds: Sequence[np.ndarray], classes: Sequence[str], n_boot: int = 400, seed: int = 0
) -> np.ndarray:
    """Macro-F1 of several models' point predictions (``preds``: one (n,) array of class indices each) on the
    same ``n_boot`` resamples of the texts (paired): an (n_models, n_boot) array. Macro-F1 as
    :func:`classification_metrics` computes it (every class of ``classes``, 0 for a class without predictions
    or support)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(g, -1) for g in gold])
    n, k = len(y), len(classes)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # (B, n) resample counts
    gold_hot = np.zeros((n, k))
    gold_hot[np.arange(n)[y >= 0], y[y >= 0]] = 1.0
    out = []
    for pred in preds:
        pred_hot = np.zeros((n, k))
        pred_hot[np.arange(n), pred] = 1.0
        tp = weights @ (gold_hot * pred_hot)
        fp = weights @ pred_hot - tp
        fn = weights @ gold_hot - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        out.append(f.mean(axis=1))
    return np.array(out)
