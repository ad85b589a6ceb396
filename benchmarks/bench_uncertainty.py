"""Uncertainty + clustering time on a 100k x 384 pool (10-head ensemble, 77 classes).

The heads are trained on real BANKING77 10-shot embeddings; the pool is 100k synthetic unit vectors drawn
around the real class centroids (embedding 100k real texts would dominate the timing and is measured in
bench_embed). Prints seconds per stage.

    python -m benchmarks.bench_uncertainty [--n 100000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--heads", type=int, default=10)
    args = ap.parse_args()

    from activesynth.agent.classifier import HeadEnsemble
    from activesynth.agent.config import DataConfig, ReportConfig
    from activesynth.agent.datasets import load
    from activesynth.agent.embed import Embedder
    from activesynth.agent.report import choose_k, cluster_texts
    from activesynth.agent.uncertainty import BALD, Entropy, Margin

    ds = load(DataConfig(dataset="banking77", shots=10))
    emb = Embedder()
    X = emb.encode(ds.train.texts)
    clf = HeadEnsemble(emb, n_heads=args.heads).fit_embeddings(X, ds.train.labels)
    rng = np.random.default_rng(0)
    labels = np.array(ds.train.labels)
    cents = np.stack([X[labels == c].mean(0) for c in clf.classes_])
    pool = cents[rng.integers(0, len(cents), args.n)] + rng.normal(0, 0.03, (args.n, X.shape[1]))
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)

    timings = {}
    t = time.perf_counter()
    members = clf.member_proba_embeddings(pool)
    timings["ensemble probabilities (10 heads)"] = time.perf_counter() - t
    for s in (Entropy(), Margin(), BALD()):
        t = time.perf_counter()
        scores = s.score(members)
        timings[f"score: {s.name}"] = time.perf_counter() - t
    t = time.perf_counter()
    n_sel = int(0.3 * args.n)
    sel = np.argpartition(-scores, n_sel)[:n_sel]
    timings["select top 30%"] = time.perf_counter() - t
    k = choose_k(n_sel, ReportConfig())
    t = time.perf_counter()
    cluster_texts(pool[sel], k, seed=0)
    timings[f"FAISS k-means of {n_sel} into {k}"] = time.perf_counter() - t
    t = time.perf_counter()
    cluster_texts(pool, 100, seed=0)
    full_km = time.perf_counter() - t

    total = sum(timings.values())
    print(f"\nUncertainty + clustering on {args.n} x {pool.shape[1]} ({len(clf.classes_)} classes)")
    print(f"{'stage':48} {'seconds':>9}")
    for k_, v in timings.items():
        print(f"{k_:48} {v:9.3f}")
    print(f"{'total, all three scores (goal <= 2 s)':48} {total:9.3f}")
    print(f"{'(for reference) FAISS k-means of all into 100':48} {full_km:9.3f}")


if __name__ == "__main__":
    main()
