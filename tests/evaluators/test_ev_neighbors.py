"""The rival-prototype check (``label_neighbors``) on real BANKING77 texts: right labels pass at about the
calibrated rate, texts that are typical of a rival class but carry the wrong label are caught."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.evaluators.base import Candidate, FilterContext, Verdict
from activesynth.evaluators.neighbors import LabelNeighbors, class_scores


def test_class_scores_average_the_k_nearest():
    sims = np.array([[0.9, 0.1, 0.8, 0.2], [0.0, 0.7, 0.1, 0.6]])
    labels = np.array(["a", "b", "a", "b"])
    got = class_scores(sims, labels, ["a", "b", "c"], k=2)
    assert np.allclose(got, [[0.85, 0.15, -1.0], [0.05, 0.65, -1.0]])
    assert np.allclose(
        class_scores(sims, labels, ["a"], k=5)[:, 0], [0.85, 0.05]
    )  # fewer than k: all of them


@pytest.fixture(scope="module")
def held_out(banking_train, shot_data, shot_labels):
    """Real training texts of the 10 labels that the classifier and the references have not seen."""
    seen = set(shot_data[0])
    per: dict[str, list[str]] = {lab: [] for lab in shot_labels}
    for text, label in banking_train:
        if label in per and text not in seen and len(per[label]) < 12:
            per[label].append(text)
    return per


def test_right_labels_pass_and_rival_prototypes_are_caught(embedder, ensemble, shot_data, held_out):
    texts, labels = shot_data
    context = FilterContext(embedder=embedder, classifier=ensemble, labelled=(texts, labels))
    right = [Candidate(f"r{i}", t, lab) for i, (lab, ts) in enumerate(held_out.items()) for t in ts]
    check = LabelNeighbors(quantile=0.05)
    kept_right = np.mean([d.verdict == Verdict.KEEP for d in check.judge(right, context)])
    # a wrong label: each held-out text presented as the class the classifier finds most like it (a rival)
    proba = ensemble.predict_proba([c.text for c in right])
    classes = list(ensemble.classes_)
    wrong = []
    for c, p in zip(right, proba, strict=True):
        p = p.copy()
        p[classes.index(c.label)] = -1
        wrong.append(Candidate(c.id + "w", c.text, classes[int(p.argmax())]))
    kept_wrong = np.mean([d.verdict == Verdict.KEEP for d in check.judge(wrong, context)])
    assert kept_right >= 0.8, kept_right  # calibrated to lose about 1 in 20 real-looking texts
    assert kept_wrong <= 0.3, kept_wrong
    dropped = [d for d in check.judge(wrong, context) if d.verdict == Verdict.DROP]
    assert dropped and dropped[0].reason.startswith("near_rival: nearer real texts of ")
    # relabel: a wrong text the classifier also puts with the rival gets the rival's label back
    relabeled = LabelNeighbors(quantile=0.05, verdict="relabel").judge(wrong, context)
    back = [(d.relabel, c) for d, c in zip(relabeled, right, strict=True) if d.relabel]
    assert back and np.mean([label == c.label for label, c in back]) >= 0.6  # mostly the true label


def test_without_references_nothing_is_checked(embedder, ensemble):
    out = LabelNeighbors().judge([Candidate("a", "where is my card", "card_arrival")], FilterContext())
    assert out[0].verdict == Verdict.KEEP and out[0].code == "not_checked"
