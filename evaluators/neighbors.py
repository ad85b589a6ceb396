"""The rival-prototype check: is a candidate among the real texts of its intended label, or among those of a
rival label?

A generator's harmful label errors look like typical texts of a sibling class (README, issue 13's probe), and
the classifier's margin cannot tell them from hard but right texts: the texts the classifier is unsure about
are exactly where both sit. Real labelled texts can. For a candidate of label ``y``, the score of a class is
the mean cosine of the candidate to the ``k`` nearest real texts of that class (train and dev; never the
selection split or test); the margin is ``score(y) - max score(r)`` over the classifier's top ``rivals``
other labels. Real texts themselves have margins (each one scored leave-one-out against the others); a
candidate whose margin is below their ``quantile`` is dropped (or flagged): about ``quantile`` of texts that
look like real texts of their label would be lost, while texts among a rival's examples are caught.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from activesynth.agent.config.filters import LabelNeighborsOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, Verdict, register
from activesynth.evaluators.vectors import embed

__all__ = ["LabelNeighbors", "class_scores"]


def class_scores(sims: np.ndarray, ref_labels: np.ndarray, classes: Sequence[str], k: int) -> np.ndarray:
    """(n, len(classes)): per row, the mean of the ``k`` highest similarities to each class's references
    (fewer when a class has fewer; -1 for a class without references)."""
    out = np.full((sims.shape[0], len(classes)), -1.0)
    for j, c in enumerate(classes):
        cols = np.flatnonzero(ref_labels == c)
        if len(cols) == 0:
            continue
        part = sims[:, cols]
        kk = min(k, len(cols))
        top = -np.partition(-part, kk - 1, axis=1)[:, :kk]
        out[:, j] = top.mean(axis=1)
    return out


@register("label_neighbors")
class LabelNeighbors(LabelNeighborsOptions, Evaluator):
    """Drop a candidate that sits nearer a rival label's real texts than real texts of its label do."""

    def _margins(
        self, scores: np.ndarray, own: np.ndarray, proba: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(margin, nearest rival class index) per row: own class score minus the best rival's, where the
        rivals are the classifier's top ``rivals`` other classes."""
        p = np.array(proba, dtype=float)
        p[np.arange(len(own)), own] = -np.inf
        rivals = np.argsort(-p, axis=1)[:, : self.rivals]
        rival_scores = np.take_along_axis(scores, rivals, axis=1)
        nearest = rivals[np.arange(len(own)), rival_scores.argmax(axis=1)]
        return scores[np.arange(len(own)), own] - rival_scores.max(axis=1), nearest

    def _threshold(self, ref: np.ndarray, texts, labels: np.ndarray, classes: list[str], classifier) -> float:
        """The ``quantile`` of the real texts' own margins, each scored leave-one-out."""
        pos = {c: i for i, c in enumerate(classes)}
        rows = np.flatnonzero([lab in pos for lab in labels])
        if len(rows) == 0:
            return -np.inf
        sims = ref[rows] @ ref.T
        sims[np.arange(len(rows)), rows] = -np.inf  # not itself
        own = np.array([pos[labels[r]] for r in rows])
        proba = np.asarray(classifier.predict_proba([texts[r] for r in rows]))
        margin, _ = self._margins(class_scores(sims, labels, classes, self.k), own, proba)
        return float(np.quantile(margin, self.quantile))

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        texts, labels = list(context.labelled[0]), np.array(context.labelled[1])
        if not candidates:
            return []
        if not texts or context.embedder is None or context.classifier is None:
            return [self.keep("not_checked: no labelled real texts, embedder or classifier")] * len(
                candidates
            )
        classes = list(context.classifier.classes_)
        pos = {c: i for i, c in enumerate(classes)}
        ref = embed(context.embedder, texts)
        threshold = self._threshold(ref, texts, labels, classes, context.classifier)
        known = [i for i, c in enumerate(candidates) if c.label in pos]
        out = [self.keep("not_checked: label unknown to the classifier")] * len(candidates)
        if not known:
            return out
        cand = embed(context.embedder, [candidates[i].text for i in known])
        own = np.array([pos[candidates[i].label] for i in known])
        proba = np.asarray(context.classifier.predict_proba([candidates[i].text for i in known]))
        margin, nearest = self._margins(class_scores(cand @ ref.T, labels, classes, self.k), own, proba)
        for j, i in enumerate(known):
            m = float(margin[j])
            if m >= threshold:
                out[i] = self.keep(f"near_own_label: margin {m:+.3f} >= {threshold:+.3f}", m)
                continue
            rival = classes[nearest[j]]
            why = f"near_rival: nearer real texts of {rival} (margin {m:+.3f} < {threshold:+.3f})"
            if self.verdict == "review":
                out[i] = self.review(why, m)
            elif self.verdict == "relabel" and int(proba[j].argmax()) == int(nearest[j]):
                out[i] = Decision(self.name, Verdict.KEEP, m, f"relabeled: to {rival}, {why}", relabel=rival)
            else:
                out[i] = self.drop(why, m)
        return out
