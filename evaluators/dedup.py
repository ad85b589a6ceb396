"""Semantic near-duplicate filter: cosine of normalized embeddings, exact search with FAISS."""

from __future__ import annotations

import math
from collections.abc import Sequence

from activesynth.agent.config.filters import EmbeddingDedupOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, nearest_text, register
from activesynth.evaluators.vectors import CosineIndex, embed, greedy_dedup

__all__ = ["EmbeddingDedup"]


@register("embedding_dedup")
class EmbeddingDedup(EmbeddingDedupOptions, Evaluator):
    """Drop a candidate whose cosine to a real or accepted text exceeds ``max_cosine``.

    Greedy within the batch like :class:`~evaluators.rouge.RougeLFilter`: passing candidates that no
    earlier evaluator dropped join the reference set before the next one is scored.
    """

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        if not candidates:
            return []
        refs = context.reference_texts()
        n_real = len(context.real_texts)
        cand_vecs = embed(context.embedder, [c.text for c in candidates])
        index = CosineIndex(cand_vecs.shape[1], embed(context.embedder, refs) if refs else None)
        active = context.is_active(len(candidates))
        kept, best, where = greedy_dedup(cand_vecs, index, self.max_cosine, active, self.block)
        joined = [i for i in range(len(candidates)) if kept[i] and active[i]]
        out = []
        for i in range(len(candidates)):
            score = None if math.isinf(best[i]) else float(best[i])
            if kept[i]:
                shown = "none" if score is None else f"{score:.3f}"
                out.append(self.keep(f"novel: max cosine={shown} <= {self.max_cosine:.3f}", score))
                continue
            near = nearest_text(int(where[i]), n_real, len(refs), candidates, joined)
            out.append(
                self.drop(f"near_duplicate: cosine={score:.3f} > {self.max_cosine:.3f} to {near}", score)
            )
        return out
