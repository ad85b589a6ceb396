"""Training with synthetic data and evaluation: the retrain stage of a round.

Real texts always stay in the mix with weight 1; synthetic texts are capped per class and weighted, and the
weights keep every class's real prior (no prior shift from feeding a subset of classes). The synthetic weight
is chosen on the selection split, never on test.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from activesynth.agent.classifier import build_classifier
from activesynth.agent.config import RunConfig
from activesynth.agent.datasets import Dataset

__all__ = [
    "cap_synthetic",
    "drop_probability",
    "evaluate",
    "fit_with_synthetic",
    "select_weight",
    "selection_split",
    "synthetic_weights",
]


def synthetic_weights(
    real_labels: list[str], syn_labels: list[str], weight: float, balance: bool = True
) -> np.ndarray:
    """Sample weights: 1 for real texts, ``weight`` for synthetic ones; with ``balance``, each class's
    total mass is rescaled so the classes keep the real data's prior (total mass unchanged)."""
    w = np.array([1.0] * len(real_labels) + [weight] * len(syn_labels))
    if not balance or not syn_labels:
        return w
    labels = np.array(list(real_labels) + list(syn_labels))
    real = Counter(real_labels)
    n_real = sum(real.values())
    total = w.sum()
    for c, n_c in real.items():
        m = labels == c
        w[m] *= (n_c / n_real) * total / w[m].sum()
    return w


def cap_synthetic(records: list[dict], real_counts: Counter, ratio: float) -> list[dict]:
    """Keep at most ``ratio`` × (real texts of the class) synthetic texts per class, in order."""
    seen: Counter = Counter()
    out = []
    for r in records:
        lab = r["label"]
        if lab in real_counts and seen[lab] < math.floor(ratio * real_counts[lab]):
            seen[lab] += 1
            out.append(r)
    return out


def fit_with_synthetic(config: RunConfig, ds: Dataset, embedder, synthetic: list[dict], weight: float):
    """A fresh classifier on real train + synthetic texts with the loop's weighting."""
    cfg = config
    syn = cap_synthetic(synthetic, Counter(ds.train.labels), cfg.loop.max_synthetic_per_real)
    texts = list(ds.train.texts) + [r["text"] for r in syn]
    labels = list(ds.train.labels) + [r["label"] for r in syn]
    w = synthetic_weights(list(ds.train.labels), [r["label"] for r in syn], weight, cfg.loop.balance)
    return build_classifier(cfg.classifier, embedder).fit(texts, labels, sample_weight=w)


def selection_split(ds: Dataset):
    """The split that model choices are made on: the selection split, or dev when there is none."""
    return ds.select if ds.select is not None else ds.dev


def select_weight(
    config: RunConfig, ds: Dataset, embedder, synthetic: list[dict]
) -> tuple[float, float, object, dict]:
    """Try each configured synthetic weight; return (weight, selection macro-F1, classifier, table)."""
    from activesynth.evaluators.metrics.classification import classification_metrics

    split = selection_split(ds)
    table: dict[str, float] = {}
    best = None
    for w in config.loop.synthetic_weights if synthetic else [1.0]:
        clf = fit_with_synthetic(config, ds, embedder, synthetic, w)
        f1 = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)["macro_f1"]
        table[str(w)] = f1
        if best is None or f1 > best[1] + 1e-12:
            best = (w, f1, clf)
    assert best is not None
    return best[0], best[1], best[2], table


def evaluate(
    clf,
    ds: Dataset,
    embedder,
    robustness: bool = True,
    attack_texts: int = 100,
    seed: int = 0,
    robustness_texts: int | None = 1000,
) -> dict:
    """Test metrics (accuracy, macro P/R/F1, per-class F1, ECE), selection metrics and the dev–test gap,
    and optionally robustness on perturbed copies of (a seeded sample of) the test set and a greedy attack."""
    from activesynth.evaluators.metrics.classification import classification_metrics

    split = selection_split(ds)
    sel = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)
    texts, labels = ds.test.reveal("evaluation")
    test = classification_metrics(labels, clf.predict_proba(texts), clf.classes_)
    out = {
        "test": test,
        "selection": {k: v for k, v in sel.items() if k != "per_class"},
        "dev_test_gap": sel["accuracy"] - test["accuracy"],
    }
    if robustness and hasattr(clf, "predict_proba_embeddings"):
        from activesynth.evaluators.metrics.robustness import robustness_metrics

        plain = embedder.uncached()  # perturbed texts stay out of the disk cache

        def proba_fn(batch):
            return clf.predict_proba_embeddings(plain.encode(list(batch)))

        r_texts, r_labels = texts, labels
        if robustness_texts and len(texts) > robustness_texts:
            pick = np.sort(np.random.default_rng(seed).choice(len(texts), robustness_texts, replace=False))
            r_texts, r_labels = [texts[i] for i in pick], [labels[i] for i in pick]
        out["robustness"] = robustness_metrics(proba_fn, r_texts, r_labels, clf.classes_, seed, attack_texts)
        out["robustness"]["n_texts"] = len(r_texts)
    return out


def drop_probability(old, new, ds: Dataset, seed: int = 0, n_boot: int = 400) -> float:
    """How sure we are that ``new`` is worse than ``old`` on the selection split: the share of paired
    bootstrap resamples of the selection texts in which its macro-F1 is lower (ties count half)."""
    from activesynth.evaluators.metrics.classification import bootstrap_macro_f1

    split = selection_split(ds)
    classes = list(old.classes_)
    order = [list(new.classes_).index(c) for c in classes]
    p_old = old.predict_proba(split.texts).argmax(axis=1)
    p_new = new.predict_proba(split.texts)[:, order].argmax(axis=1)
    f1 = bootstrap_macro_f1(split.labels, [p_old, p_new], classes, n_boot, seed)
    diff = f1[1] - f1[0]
    return float(np.mean(diff < 0) + 0.5 * np.mean(diff == 0))
