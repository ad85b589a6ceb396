"""Keep synthetic texts away from the held-out test set.

Test texts never leave this module: they are revealed once (purpose ``"leakage_guard"``), held in a private
attribute, and neither logged nor quoted; reasons carry only scores ("near a held-out test text
(rougeL=0.82)").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydantic import PrivateAttr

from activesynth.agent.config.filters import LeakageOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, register
from activesynth.evaluators.rouge import RougeLIndex
from activesynth.evaluators.vectors import CosineIndex, embed

__all__ = ["LeakageGuard"]

log = logging.getLogger(__name__)


def _texts_of(revealed) -> list[str]:
    """Texts from ``SealedSplit.reveal`` ((texts, labels)), an object with ``.texts``, or a list of texts."""
    if hasattr(revealed, "texts"):
        return list(revealed.texts)
    if isinstance(revealed, tuple) and len(revealed) == 2 and not isinstance(revealed[0], str):
        return list(revealed[0])
    return list(revealed)


@register("leakage")
class LeakageGuard(LeakageOptions, Evaluator):
    """Drop any candidate within ROUGE-L F ``> max_rouge`` or cosine ``> max_cosine`` of any test text.

    The cosine check needs an embedder in the context; without one only ROUGE-L is checked (and the reason
    says so). Without a test split every candidate is kept with code ``not_checked``.
    """

    _sealed_source: object | None = PrivateAttr(None)
    _texts: list[str] = PrivateAttr(default_factory=list)

    def __repr__(self) -> str:
        return f"LeakageGuard(max_rouge={self.max_rouge}, max_cosine={self.max_cosine})"

    def _test_texts(self, context: FilterContext) -> list[str]:
        if context.test is None:
            return []
        if self._sealed_source is not context.test:
            self._texts = _texts_of(context.test.reveal("leakage_guard"))
            self._sealed_source = context.test
        return self._texts

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        tests = self._test_texts(context)
        if not tests:
            log.warning("leakage guard: no held-out test texts given; nothing checked")
            return [self.keep("not_checked: no held-out test texts given") for _ in candidates]
        texts = [c.text for c in candidates]
        index = RougeLIndex(tests)
        rouge, _ = index.max_scores(index.codec.encode_many(texts))
        cosine = np.full(len(texts), np.nan)
        if self.use_embeddings and context.embedder is not None and texts:
            test_vecs = embed(context.embedder, tests)
            cosine, _ = CosineIndex(test_vecs.shape[1], test_vecs).nearest(embed(context.embedder, texts))
        checked = "rougeL" if np.isnan(cosine).all() else "rougeL and cosine"
        out = []
        for r, c in zip(rouge, cosine, strict=True):
            shown = f"rougeL={r:.2f}" + ("" if np.isnan(c) else f", cosine={c:.3f}")
            score = float(max(r, 0.0 if np.isnan(c) else c))
            if r > self.max_rouge or (not np.isnan(c) and c > self.max_cosine):
                out.append(self.drop(f"near_test: near a held-out test text ({shown})", score))
            else:
                out.append(self.keep(f"far_from_test: {checked} below limits ({shown})", score))
        return out
