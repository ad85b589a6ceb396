"""Metrics of the accepted set."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.evaluators.metrics.synthetic import (
    accepted_set_metrics,
    collapse_warning,
    distinct_n,
    diversity,
    fidelity,
    frechet_distance,
    label_fidelity,
    mmd_rbf,
    privacy,
)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == 2 / 3
    assert distinct_n(["", "?"], 2) == 0.0
    assert distinct_n(["привет мир", "привет мир"], 1) == 0.5


def test_diversity_coverage():
    emb = unit(np.eye(4)[[0, 1, 2, 2]])
    d = diversity(
        ["a b", "c d", "e f", "e f"],
        emb,
        ["x", "y", "y", "y"],
        ["x", "y", "z", "w"],
        np.array([0, 1, 1, 1]),
        4,
    )
    assert d["label_coverage"] == 0.5 and d["cluster_coverage"] == 0.5
    assert d["mean_pairwise_cosine"] == pytest.approx(2 / 12)
    assert diversity(["one"], unit(np.ones((1, 3))))["mean_pairwise_cosine"] is None


def test_distribution_distances():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    b = rng.normal(size=(400, 8))
    c = rng.normal(size=(400, 8)) + 1.5
    assert frechet_distance(a, b) < 0.3 < frechet_distance(a, c)
    assert frechet_distance(a, c) == pytest.approx(8 * 1.5**2, rel=0.2)
    assert abs(mmd_rbf(a, b)) < 0.01 < mmd_rbf(a, c)
    f = fidelity(unit(a), unit(c))
    assert f["frechet"] > 0 and f["mmd2"] > 0
    assert fidelity(unit(a[:1]), unit(c))["frechet"] is None
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_privacy():
    rng = np.random.default_rng(1)
    real = unit(rng.normal(size=(50, 16)))
    syn = np.concatenate([real[:5], unit(rng.normal(size=(15, 16)))])
    p = privacy(real, syn)
    assert p["near_copy_share"] == pytest.approx(5 / 20)
    assert p["dcr_p05"] == pytest.approx(0.0, abs=1e-5) and p["dcr_median"] > 0.3
    p = privacy(
        real[:2],
        syn[5:7],
        real_texts=["where is my card", "top up failed"],
        syn_texts=["where is my card?", "new words entirely here"],
    )
    assert p["near_copy_share"] == 0.5
    assert privacy(real, syn[:0])["near_copy_share"] is None


def test_label_fidelity():
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])
    out = label_fidelity(proba, ["a", "b", "c"], ["a", "c", "a"], k=2)
    assert out == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
    assert label_fidelity(proba, ["a", "b", "c"], ["zz", "a", "c"])["top1"] == pytest.approx(1 / 3)


def test_collapse_warning():
    prev = {"distinct_2": 0.8, "mean_pairwise_cosine": 0.3}
    assert collapse_warning(None, prev) is None
    assert collapse_warning(prev, {"distinct_2": 0.78, "mean_pairwise_cosine": 0.32}) is None
    msg = collapse_warning(prev, {"distinct_2": 0.5, "mean_pairwise_cosine": 0.32})
    assert msg and "distinct_2 0.800 -> 0.500" in msg
    assert "mean_pairwise_cosine" in collapse_warning(prev, {"distinct_2": 0.8, "mean_pairwise_cosine": 0.5})


@pytest.mark.slow
def test_accepted_set_metrics_real(embedder, shot_data, banking_dev, ensemble, shot_labels):
    real, _ = shot_data
    dev = [(t, lab) for t, lab in banking_dev if lab in shot_labels][:40]
    syn, labels = [t for t, _ in dev], [lab for _, lab in dev]
    m = accepted_set_metrics(
        syn, labels, real, embedder, all_labels=shot_labels, reference_classifier=ensemble
    )
    assert (
        0.2 < m["diversity"]["distinct_1"] < m["diversity"]["distinct_2"] <= 1
        and m["diversity"]["label_coverage"] > 0.5
    )
    assert 0 < m["diversity"]["cluster_coverage"] <= 1
    assert m["label_fidelity"]["top1"] > 0.6
    assert m["privacy"]["near_copy_share"] < 0.2
    # the same texts repeated: less diverse; the warning fires against the first set
    collapsed = accepted_set_metrics(syn[:5] * 8, labels[:5] * 8, real, embedder, previous=m)
    assert (
        collapsed["collapse_warning"] and collapsed["diversity"]["distinct_2"] < m["diversity"]["distinct_2"]
    )
    # real dev texts are closer to real train texts than a shuffled-character version of them
    noise = ["".join(sorted(t)) for t in syn]
    far = accepted_set_metrics(noise, labels, real, embedder)
    assert far["fidelity"]["frechet"] > m["fidelity"]["frechet"]
    assert far["fidelity"]["mmd2"] > m["fidelity"]["mmd2"]
