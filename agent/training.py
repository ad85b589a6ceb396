"""Training with synthetic data and evaluation: the retrain stage of a round.

Real texts always stay in the mix with weight 1; synthetic texts are capped per class and weighted, and the
weights keep every class's real prior (no prior shift from feeding a subset of classes). The synthetic weight
is chosen on the selection split, never on test.

Synthetic labels can be wrong (an LLM writes a text of a confusable sibling class), so
``loop.synthetic_targets`` chooses how a synthetic text is trained, using the posterior of a classifier
trained on the real texts only (it never saw a synthetic text):

* ``hard``: its label (the behaviour before the option).
* ``soft``: a soft target, 1 − α on its label and α over its k likeliest other classes in proportion to
  that posterior. Any classifier that takes ``sample_weight`` learns it: the text becomes k + 1 rows
  (text, class j, weight × target_j), and a weighted cross-entropy over those rows is the cross-entropy
  with the soft target.
* ``confidence``: its label, with the weight times c = p(label) / max_j p(j): 1 when the real-only
  classifier finds the label the likeliest, and the likelihood ratio of the label against the
  classifier's own choice otherwise (a text that looks like a rival class counts less).

Class balancing is computed on the synthetic texts' own labels (as for ``hard``); a soft text's balanced
weight is then split over its rows, so the rows of a text always add up to the text's weight.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from activesynth.agent.classifier import FitContext, build_classifier
from activesynth.agent.config import RunConfig
from activesynth.agent.datasets import Dataset

__all__ = [
    "SyntheticRows",
    "cap_synthetic",
    "drop_probability",
    "evaluate",
    "fit_with_synthetic",
    "label_confidence",
    "new_classifier",
    "real_only_classifier",
    "select_weight",
    "selection_split",
    "soft_targets",
    "synthetic_rows",
    "synthetic_weights",
    "training_rows",
]


def synthetic_weights(
    real_labels: list[str], syn_labels: list[str], weight: float, balance: bool = True, scale=None
) -> np.ndarray:
    """Sample weights: 1 for real texts, ``weight`` (times ``scale``, one factor per synthetic text, when
    given) for synthetic ones; with ``balance``, each class's total mass is rescaled so the classes keep the
    real data's prior (total mass unchanged)."""
    w = np.array([1.0] * len(real_labels) + [weight] * len(syn_labels))
    if scale is not None:
        w[len(real_labels) :] *= np.asarray(scale, dtype=float)
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


def label_confidence(proba: np.ndarray, classes: list[str], labels: list[str]) -> np.ndarray:
    """Per text, p(label) / max_j p(j) under ``proba`` (rows aligned with ``labels``, columns with
    ``classes``): 1 where the label is the likeliest class, the label's likelihood ratio to it otherwise."""
    if not labels:
        return np.zeros(0)
    col = {c: j for j, c in enumerate(classes)}
    p = np.asarray(proba, dtype=float)
    own = p[np.arange(len(labels)), [col[lab] for lab in labels]]
    return own / np.maximum(p.max(axis=1), 1e-12)


def soft_targets(
    proba: np.ndarray, classes: list[str], labels: list[str], alpha: float, rivals: int
) -> list[list[tuple[str, float]]]:
    """Per text, its soft target as (class, share) pairs: 1 − ``alpha`` on its label, ``alpha`` over the
    ``rivals`` likeliest other classes in proportion to ``proba`` restricted to them (evenly when they all
    have probability 0). The shares of a text add up to 1; a zero share gets no pair."""
    col = {c: j for j, c in enumerate(classes)}
    k = min(rivals, len(classes) - 1)
    out = []
    for p, lab in zip(np.asarray(proba, dtype=float), labels, strict=True):
        pairs = [(lab, 1.0 - alpha)]
        if alpha > 0 and k > 0:
            others = p.copy()
            others[col[lab]] = -np.inf
            top = np.argsort(-others, kind="stable")[:k]
            q = np.clip(others[top], 0, None)
            q = q / q.sum() if q.sum() > 0 else np.full(k, 1.0 / k)
            pairs += [(classes[j], alpha * float(s)) for j, s in zip(top, q, strict=True) if s > 0]
        out.append(pairs)
    return out


@dataclass
class SyntheticRows:
    """How synthetic texts enter training: row ``r`` is text ``text[r]`` (an index into the texts) with label
    ``labels[r]`` and share ``share[r]`` of that text's weight; ``scale`` (one factor per text, or None)
    multiplies the texts' weights before class balancing."""

    text: np.ndarray
    labels: list[str]
    share: np.ndarray
    scale: np.ndarray | None = None


def synthetic_rows(loop, records: list[dict], reference=None) -> SyntheticRows:
    """The training rows of synthetic ``records`` under ``loop.synthetic_targets`` (see the module
    docstring); ``reference`` is the real-only classifier whose posterior 'soft' and 'confidence' use."""
    labels = [r["label"] for r in records]
    mode = loop.synthetic_targets
    if mode == "hard" or not records:
        return SyntheticRows(np.arange(len(records)), labels, np.ones(len(records)))
    if reference is None:
        raise ValueError(f"synthetic_targets={mode!r} needs the real-only classifier's posteriors")
    proba = reference.predict_proba([r["text"] for r in records])
    classes = list(reference.classes_)
    if mode == "confidence":
        conf = label_confidence(proba, classes, labels)
        return SyntheticRows(np.arange(len(records)), labels, np.ones(len(records)), conf)
    targets = soft_targets(proba, classes, labels, loop.soft_alpha, loop.soft_rivals)
    index = [i for i, pairs in enumerate(targets) for _ in pairs]
    return SyntheticRows(
        np.array(index, dtype=int),
        [c for pairs in targets for c, _ in pairs],
        np.array([s for pairs in targets for _, s in pairs]),
    )


def new_classifier(config: RunConfig, ds: Dataset, embedder, n_real: int | None = None, previous=None):
    """A fresh classifier of the configured kind; one that takes a :class:`FitContext` is told the selection
    split (early stopping, temperature), which rows are real, and, with ``classifier.warm_start``, the model
    to start from (``previous``)."""
    clf = build_classifier(config.classifier, embedder)
    if hasattr(clf, "set_context"):
        split = selection_split(ds)
        clf.set_context(
            FitContext(
                n_real=n_real,
                eval_texts=list(split.texts),
                eval_labels=list(split.labels),
                previous=previous if config.classifier.warm_start else None,
            )
        )
    return clf


def real_only_classifier(config: RunConfig, ds: Dataset, embedder):
    """The classifier of the real training texts alone (round 1's model)."""
    return new_classifier(config, ds, embedder).fit(ds.train.texts, ds.train.labels)


def training_rows(
    config: RunConfig, ds: Dataset, synthetic: list[dict], weight: float, reference=None
) -> tuple[list[str], list[str], np.ndarray]:
    """(texts, labels, sample weights) of real train + synthetic texts with the loop's cap, weighting and
    targets; real rows come first. ``reference``: the real-only classifier for 'soft' and 'confidence'."""
    cfg = config
    syn = cap_synthetic(synthetic, Counter(ds.train.labels), cfg.loop.max_synthetic_per_real)
    rows = synthetic_rows(cfg.loop, syn, reference)
    real = list(ds.train.labels)
    w = synthetic_weights(real, [r["label"] for r in syn], weight, cfg.loop.balance, rows.scale)
    texts = list(ds.train.texts) + [syn[i]["text"] for i in rows.text]
    labels = real + rows.labels
    w = np.concatenate([w[: len(real)], w[len(real) :][rows.text] * rows.share])
    return texts, labels, w


def _reference(config: RunConfig, ds: Dataset, embedder, synthetic: list[dict], reference):
    """The real-only classifier when the synthetic targets need its posteriors (fitted here if None)."""
    if reference is None and synthetic and config.loop.synthetic_targets != "hard":
        return real_only_classifier(config, ds, embedder)
    return reference


def fit_with_synthetic(
    config: RunConfig,
    ds: Dataset,
    embedder,
    synthetic: list[dict],
    weight: float,
    reference=None,
    previous=None,
):
    """A fresh classifier on real train + synthetic texts with the loop's weighting and targets;
    ``reference``: the real-only classifier for 'soft' and 'confidence' targets (fitted here if None);
    ``previous``: the model a warm start begins from."""
    reference = _reference(config, ds, embedder, synthetic, reference)
    texts, labels, w = training_rows(config, ds, synthetic, weight, reference)
    clf = new_classifier(config, ds, embedder, len(ds.train.texts), previous)
    return clf.fit(texts, labels, sample_weight=w)


def selection_split(ds: Dataset):
    """The split that model choices are made on: the selection split, or dev when there is none."""
    return ds.select if ds.select is not None else ds.dev


def select_weight(
    config: RunConfig, ds: Dataset, embedder, synthetic: list[dict], reference=None, previous=None
) -> tuple[float, float, object, dict]:
    """Choose the synthetic weight on the selection split; return (weight, selection macro-F1, classifier,
    table of selection macro-F1 per weight tried).

    Kinds whose training is cheap (``head``, ``custom``, ``finetune``) are fit once per configured weight.
    Kinds with ``proxy_features`` (``hf``, ``setfit``) under ``classifier.weight_selection: proxy`` are fit
    once: see :func:`_select_then_fit`. ``reference``: the real-only classifier for 'soft' and 'confidence'
    targets (fitted once if None); ``previous``: the model a warm start begins from."""
    from activesynth.evaluators.metrics.classification import classification_metrics

    split = selection_split(ds)
    reference = _reference(config, ds, embedder, synthetic, reference)
    weights = config.loop.synthetic_weights if synthetic else [1.0]
    if len(weights) > 1 and config.classifier.weight_selection == "proxy":
        probe = new_classifier(config, ds, embedder, len(ds.train.texts), previous)
        if hasattr(probe, "proxy_features"):
            return _select_then_fit(config, ds, probe, synthetic, weights, reference)
    table: dict[str, float] = {}
    best = None
    for w in weights:
        clf = fit_with_synthetic(config, ds, embedder, synthetic, w, reference, previous)
        f1 = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)["macro_f1"]
        table[str(w)] = f1
        if best is None or f1 > best[1] + 1e-12:
            best = (w, f1, clf)
    assert best is not None
    return best[0], best[1], best[2], table


def _select_then_fit(
    config: RunConfig, ds: Dataset, clf, synthetic: list[dict], weights: list[float], reference
) -> tuple[float, float, object, dict]:
    """The one-fit rule for slow kinds: do the weight-independent part of training once (``prepare``:
    nothing for ``hf``, the contrastive body for ``setfit``), fit one logistic head per candidate weight on
    the classifier's ``proxy_features`` (``hf``: the frozen starting body; ``setfit``: the tuned body), pick
    the weight whose head has the best selection macro-F1, and fit the classifier once at that weight. The
    table holds the heads' scores; the returned F1 is the fitted classifier's own."""
    from activesynth.agent.heads import HeadEnsemble
    from activesynth.evaluators.metrics.classification import classification_metrics

    split = selection_split(ds)
    texts, labels, _ = training_rows(config, ds, synthetic, weights[0], reference)
    clf.prepare(texts, labels)
    X, X_sel = clf.proxy_features(texts), clf.proxy_features(split.texts)
    table: dict[str, float] = {}
    best: tuple[float, float] | None = None
    for w in weights:
        _, _, sw = training_rows(config, ds, synthetic, w, reference)
        head = HeadEnsemble(None, 1, "logistic", config.classifier.C, False, config.classifier.seed)
        head.fit_embeddings(X, labels, sw)
        proba = head.predict_proba_embeddings(X_sel)
        f1 = classification_metrics(split.labels, proba, head.classes_)["macro_f1"]
        table[str(w)] = f1
        if best is None or f1 > best[1] + 1e-12:
            best = (w, f1)
    assert best is not None
    _, _, sw = training_rows(config, ds, synthetic, best[0], reference)
    clf.fit(texts, labels, sample_weight=sw)
    f1 = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)["macro_f1"]
    return best[0], f1, clf, table


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
