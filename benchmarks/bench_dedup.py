"""Embedding near-duplicate filtering: 10,000 candidates against a 100,000-vector pool with FAISS.

The vectors are random (Gaussian, L2-normalized, dim 384 like all-MiniLM-L6-v2), not real embeddings: the
timing of exact inner-product search does not depend on the values. 5% of the candidates are planted as
near-copies of pool vectors and 5% as near-copies of earlier candidates, so the greedy in-batch path does
real work; the table also checks that exactly those are dropped. Embedding the texts themselves is not
timed (see the embedder's benchmark); with a warm cache it is a lookup.

Run: ``python -m benchmarks.bench_dedup [--pool 100000] [--candidates 10000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import faiss

    from activesynth.evaluators.vectors import CosineIndex, greedy_dedup

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    pool = unit(rng.normal(size=(args.pool, args.dim)))
    cands = unit(rng.normal(size=(args.candidates, args.dim)))
    n_plant = args.candidates // 20
    pool_copies = rng.choice(args.candidates, n_plant, replace=False)
    cands[pool_copies] = unit(
        pool[rng.choice(args.pool, n_plant)] + 0.01 * rng.normal(size=(n_plant, args.dim))
    )
    rest = np.setdiff1d(np.arange(args.candidates // 2, args.candidates), pool_copies)
    batch_copies = rng.choice(rest, n_plant, replace=False)
    sources = rng.choice(np.setdiff1d(np.arange(args.candidates // 2), pool_copies), n_plant, replace=False)
    cands[batch_copies] = unit(cands[sources] + 0.01 * rng.normal(size=(n_plant, args.dim)))

    rows = []
    t0 = time.perf_counter()
    index = CosineIndex(args.dim, pool)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept, best, _ = greedy_dedup(cands, index, args.threshold)
    t_dedup = time.perf_counter() - t0
    expected = np.ones(args.candidates, dtype=bool)
    expected[pool_copies] = False
    expected[batch_copies] = False
    rows.append(
        (
            "FAISS IndexFlatIP + greedy in-batch",
            t_build,
            t_dedup,
            int((~kept).sum()),
            bool((kept == expected).all()),
        )
    )

    # For scale: the same search as one brute-force numpy product (no greedy part), blocked.
    t0 = time.perf_counter()
    top = np.concatenate(
        [(cands[i : i + 1000] @ pool.T).max(axis=1) for i in range(0, args.candidates, 1000)]
    )
    t_np = time.perf_counter() - t0
    rows.append(("numpy blocked matmul, pool only", 0.0, t_np, int((top > args.threshold).sum()), None))

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Embedding dedup: {args.candidates:,} candidates vs {args.pool:,} pool, dim {args.dim}, "
        f"cosine > {args.threshold} dropped, {args.threads} thread(s), random vectors"
    )
    for col in ("method", "index build s", "search+dedup s", "candidates/s", "dropped", "drops as planted"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, tb, td, dropped, ok in rows:
        table.add_row(
            name,
            f"{tb:.2f}",
            f"{td:.2f}",
            f"{args.candidates / td:,.0f}",
            f"{dropped:,}",
            "-" if ok is None else ("yes" if ok else "NO"),
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
