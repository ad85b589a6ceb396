import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from activesynth.agent.uncertainty import (
    BALD,
    EnsembleVariance,
    Entropy,
    LeastConfidence,
    Margin,
    get_strategy,
)


def _probs(raw):
    e = np.exp(raw - raw.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_known_values():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(LeastConfidence().score(p), [0, 0.5, 2 / 3])
    np.testing.assert_allclose(Margin().score(p), [0, 1, 1])
    np.testing.assert_allclose(Entropy().score(p), [0, np.log(2), np.log(3)], atol=1e-9)


def test_bald_and_variance_need_disagreement():
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert BALD().score(agree)[0] == pytest.approx(0.0, abs=1e-9)
    assert BALD().score(disagree)[0] == pytest.approx(np.log(2))
    assert EnsembleVariance().score(agree)[0] == 0
    assert EnsembleVariance().score(disagree)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="M >= 2"):
        BALD().score(np.array([[0.5, 0.5]]))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (4, 6, 5), elements=st.floats(-8, 8)))
def test_scores_are_bounded(raw):
    p = _probs(raw)
    for s, hi in [(LeastConfidence(), 1.0), (Margin(), 1.0), (Entropy(), np.log(5)), (BALD(), np.log(5))]:
        v = s.score(p)
        assert v.shape == (6,)
        assert np.all(v >= -1e-9) and np.all(v <= hi + 1e-9)
    # BALD never exceeds the predictive entropy
    assert np.all(BALD().score(p) <= Entropy().score(p) + 1e-9)


def test_get_strategy():
    assert isinstance(get_strategy("margin"), Margin)
    assert isinstance(get_strategy("mc_dropout"), BALD)
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("vibes")
