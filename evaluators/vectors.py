"""Exact cosine search on normalized embeddings with FAISS, and greedy in-batch deduplication."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CosineIndex", "embed", "greedy_dedup"]


def embed(embedder, texts: Sequence[str]) -> np.ndarray:
    """Encode with ``embedder`` and make sure rows are float32 and L2-normalized."""
    if embedder is None:
        raise ValueError("this evaluator needs an embedder in the filter context")
    vecs = np.asarray(embedder.encode(list(texts)), dtype=np.float32)
    if len(vecs):
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = vecs / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vecs, dtype=np.float32)


class CosineIndex:
    """FAISS ``IndexFlatIP`` over normalized vectors: exact highest cosine against everything added."""

    def __init__(self, dim: int, vectors: np.ndarray | None = None) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(dim)
        if vectors is not None and len(vectors):
            self.add(vectors)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(highest cosine, its position) per query; (-inf, -1) when the index is empty."""
        n = len(queries)
        if not len(self) or not n:
            return np.full(n, -np.inf), np.full(n, -1, dtype=np.int64)
        sims, pos = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
        return sims[:, 0].astype(np.float64), pos[:, 0].astype(np.int64)


def greedy_dedup(
    vectors: np.ndarray,
    index: CosineIndex,
    threshold: float,
    eligible: Sequence[bool] | None = None,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep a vector when its highest cosine to the index and to earlier kept batch vectors is
    ``<= threshold``; kept, eligible vectors join the index as we go.

    Returns (kept mask, best cosine, position of the closest in the index or -1); batch vectors that
    joined have positions from the index's old length on, in joining order.
    """
    n = len(vectors)
    eligible = [True] * n if eligible is None else list(eligible)
    kept = np.zeros(n, dtype=bool)
    best = np.full(n, -np.inf)
    where = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, block):
        chunk = vectors[start : start + block]
        ref_best, ref_pos = index.nearest(chunk)
        n_before = len(index)
        inner = chunk @ chunk.T
        joined: list[int] = []
        for j in range(len(chunk)):
            score, pos = ref_best[j], ref_pos[j]
            if joined:
                row = inner[j, joined]
                k = int(row.argmax())
                if row[k] > score:
                    score, pos = float(row[k]), n_before + k
            i = start + j
            best[i], where[i] = score, pos
            kept[i] = score <= threshold
            if kept[i] and eligible[i]:
                joined.append(j)
        index.add(chunk[joined])
    return kept, best, where
