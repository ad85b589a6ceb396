"""Metrics of an accepted synthetic set: diversity, fidelity, privacy, label fidelity, collapse warning.

All functions take texts and/or L2-normalized embeddings (numpy arrays) so they can be tested and reused
without a model; :func:`accepted_set_metrics` puts them together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from activesynth.evaluators.rouge import tokenize

__all__ = [
    "accepted_set_metrics",
    "collapse_warning",
    "distinct_n",
    "diversity",
    "fidelity",
    "frechet_distance",
    "label_fidelity",
    "mmd_rbf",
    "privacy",
]

log = logging.getLogger(__name__)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams in ``texts`` (0 when there are none)."""
    seen, total = set(), 0
    for text in texts:
        toks = tokenize(text)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _mean_pairwise_cosine(emb: np.ndarray, max_n: int = 2000, seed: int = 0) -> float | None:
    if len(emb) < 2:
        return None
    if len(emb) > max_n:
        emb = emb[np.random.default_rng(seed).choice(len(emb), max_n, replace=False)]
    sims = emb @ emb.T
    n = len(emb)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def diversity(
    texts: Sequence[str],
    emb: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    all_labels: Sequence[str] | None = None,
    cluster_of: np.ndarray | None = None,
    n_clusters: int | None = None,
) -> dict[str, Any]:
    """distinct-1/2, mean pairwise cosine (lower is more diverse), and shares of labels and clusters covered.

    ``cluster_of`` gives each synthetic text's cluster id (e.g. nearest real-data k-means centroid).
    """
    out: dict[str, Any] = {
        "n": len(texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "mean_pairwise_cosine": None if emb is None else _mean_pairwise_cosine(emb),
    }
    if labels is not None and all_labels:
        out["label_coverage"] = len(set(labels) & set(all_labels)) / len(set(all_labels))
    if cluster_of is not None and n_clusters:
        out["cluster_coverage"] = len(set(np.asarray(cluster_of).tolist())) / n_clusters
    return out


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``x`` and ``y`` (rows are samples), as in FID."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("Fréchet distance needs at least two samples on each side")
    mu_x, mu_y = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sx = _sqrtm_psd(cx)
    cross = _sqrtm_psd(sx @ cy @ sx)
    value = float(((mu_x - mu_y) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * np.trace(cross))
    return max(value, 0.0)


def mmd_rbf(x: np.ndarray, y: np.ndarray, gamma: float | None = None) -> float:
    """Unbiased squared MMD with an RBF kernel; ``gamma`` defaults to 1 / median squared distance."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two samples on each side")

    def sq(a, b):
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)

    dxx, dyy, dxy = sq(x, x), sq(y, y), sq(x, y)
    if gamma is None:
        med = np.median(dxy)
        gamma = 1.0 / med if med > 0 else 1.0
    kxx, kyy, kxy = np.exp(-gamma * dxx), np.exp(-gamma * dyy), np.exp(-gamma * dxy)
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def fidelity(real_emb: np.ndarray, syn_emb: np.ndarray, max_n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Distribution distance between real and synthetic embeddings (Fréchet and RBF-MMD²; lower is closer)."""
    rng = np.random.default_rng(seed)
    if len(real_emb) > max_n:
        real_emb = real_emb[rng.choice(len(real_emb), max_n, replace=False)]
    if len(syn_emb) > max_n:
        syn_emb = syn_emb[rng.choice(len(syn_emb), max_n, replace=False)]
    if len(real_emb) < 2 or len(syn_emb) < 2:
        return {"frechet": None, "mmd2": None}
    x, y = real_emb.astype(np.float64), syn_emb.astype(np.float64)
    return {"frechet": frechet_distance(x, y), "mmd2": mmd_rbf(x, y)}


def privacy(
    real_emb: np.ndarray,
    syn_emb: np.ndarray,
    near_copy_cosine: float = 0.95,
    real_texts: Sequence[str] | None = None,
    syn_texts: Sequence[str] | None = None,
    near_copy_rouge: float = 0.7,
) -> dict[str, Any]:
    """Distance to the closest real record (1 - cosine) and the share of near-copies of real texts."""
    if not len(syn_emb) or not len(real_emb):
        return {"dcr_median": None, "dcr_p05": None, "near_copy_share": None}
    from activesynth.evaluators.vectors import CosineIndex

    best, _ = CosineIndex(real_emb.shape[1], real_emb).nearest(syn_emb)
    dcr = 1.0 - best
    near = best > near_copy_cosine
    out: dict[str, Any] = {"dcr_median": float(np.median(dcr)), "dcr_p05": float(np.percentile(dcr, 5))}
    if real_texts is not None and syn_texts is not None:
        from activesynth.evaluators.rouge import RougeLIndex

        index = RougeLIndex(real_texts)
        rouge, _ = index.max_scores(index.codec.encode_many(syn_texts))
        near = near | (rouge > near_copy_rouge)
        out["max_rouge_median"] = float(np.median(rouge))
    out["near_copy_share"] = float(near.mean())
    return out


def label_fidelity(proba: np.ndarray, classes: Sequence[str], labels: Sequence[str], k: int = 5) -> dict:
    """Share of texts whose intended label is a reference classifier's top-1 (and top-k) prediction."""
    if not len(labels):
        return {"top1": None, f"top{k}": None}
    pos = {c: i for i, c in enumerate(classes)}
    idx = np.array([pos.get(lab, -1) for lab in labels])
    proba = np.asarray(proba)
    p_label = np.where(idx >= 0, proba[np.arange(len(idx)), np.maximum(idx, 0)], -np.inf)
    rank = 1 + (proba > p_label[:, None]).sum(1)
    return {"top1": float((rank == 1).mean()), f"top{k}": float((rank <= k).mean())}


def collapse_warning(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any], max_relative_drop: float = 0.1
) -> str | None:
    """A warning when diversity fell by more than ``max_relative_drop`` since the previous round.

    Compares distinct-2 and ``1 - mean_pairwise_cosine`` of two :func:`diversity` results.
    """
    if not previous:
        return None
    falls = []
    for key, fn in (
        ("distinct_2", lambda d: d.get("distinct_2")),
        (
            "1 - mean_pairwise_cosine",
            lambda d: None if d.get("mean_pairwise_cosine") is None else 1 - d["mean_pairwise_cosine"],
        ),
    ):
        before, now = fn(previous), fn(current)
        if before and now is not None and (before - now) / before > max_relative_drop:
            falls.append(f"{key} {before:.3f} -> {now:.3f}")
    if not falls:
        return None
    msg = "diversity collapse: " + ", ".join(falls)
    log.warning(msg)
    return msg


def accepted_set_metrics(
    syn_texts: Sequence[str],
    syn_labels: Sequence[str],
    real_texts: Sequence[str],
    embedder,
    all_labels: Sequence[str] | None = None,
    reference_classifier=None,
    previous: Mapping[str, Any] | None = None,
    n_clusters: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one accepted set; ``previous`` is the last round's result (for the collapse check)."""
    from activesynth.evaluators.vectors import embed

    syn_emb = embed(embedder, syn_texts) if syn_texts else None
    real_emb = embed(embedder, real_texts) if real_texts else None
    cluster_of, k = None, None
    if syn_emb is not None and real_emb is not None:
        k = min(n_clusters, len(real_emb) // 39)  # FAISS wants 39 points per centroid
    if k is not None and k >= 2:
        import faiss

        km = faiss.Kmeans(real_emb.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
        km.train(real_emb)
        _, assign = km.index.search(syn_emb, 1)
        cluster_of = assign[:, 0]
    out: dict[str, Any] = {
        "diversity": diversity(syn_texts, syn_emb, syn_labels, all_labels, cluster_of, k),
        "fidelity": fidelity(real_emb, syn_emb) if syn_emb is not None and real_emb is not None else None,
        "privacy": privacy(real_emb, syn_emb, real_texts=real_texts, syn_texts=syn_texts)
        if syn_emb is not None and real_emb is not None
        else None,
        "label_fidelity": None,
    }
    if reference_classifier is not None and syn_texts:
        proba = reference_classifier.predict_proba(list(syn_texts))
        out["label_fidelity"] = label_fidelity(proba, list(reference_classifier.classes_), syn_labels)
    prev_div = (previous or {}).get("diversity") if previous else None
    out["collapse_warning"] = collapse_warning(prev_div, out["diversity"])
    return out
