"""Uncertainty strategies: small classes with one verb, ``score(proba) -> (n,)``; higher is more uncertain.

``proba`` is (n, C) class probabilities or (M, n, C) for M ensemble members / MC-dropout samples. Scores
that need only a predictive distribution use the mean over members; :class:`BALD` and
:class:`EnsembleVariance` need M >= 2. :class:`MCDropout` is a sampler: ``sample(classifier, texts)``
returns (T, n, C) to feed any of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "BALD",
    "STRATEGIES",
    "BreakingTies",
    "EnsembleVariance",
    "Entropy",
    "LeastConfidence",
    "MCDropout",
    "Margin",
    "get_strategy",
]

_EPS = 1e-12


def _asfloat(proba) -> np.ndarray:
    proba = np.asarray(proba)
    return proba if proba.dtype in (np.float32, np.float64) else proba.astype(np.float64)


def _mean(proba: np.ndarray) -> np.ndarray:
    proba = _asfloat(proba)
    if proba.ndim == 3:
        return proba.mean(axis=0)
    if proba.ndim != 2:
        raise ValueError(f"expected (n, C) or (M, n, C) probabilities, got shape {proba.shape}")
    return proba


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, _EPS, 1.0, dtype=p.dtype))).sum(axis=-1)


def _members(proba: np.ndarray, name: str) -> np.ndarray:
    proba = _asfloat(proba)
    if proba.ndim != 3 or proba.shape[0] < 2:
        raise ValueError(f"{name} needs (M, n, C) probabilities from M >= 2 members or MC samples")
    return proba


class LeastConfidence:
    """1 - max_c p(c | x)."""

    name = "least_confidence"

    def score(self, proba: np.ndarray) -> np.ndarray:
        return 1.0 - _mean(proba).max(axis=1)


class Margin:
    """Breaking ties: 1 - (p_top1 - p_top2); near 1 when the two best classes tie."""

    name = "margin"

    def score(self, proba: np.ndarray) -> np.ndarray:
        p = _mean(proba)
        if p.shape[1] < 2:
            return np.zeros(p.shape[0])
        top2 = np.partition(p, -2, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])


BreakingTies = Margin


class Entropy:
    """Predictive entropy H[mean_m p_m(. | x)] in nats."""

    name = "entropy"

    def score(self, proba: np.ndarray) -> np.ndarray:
        return _entropy(_mean(proba))


class BALD:
    """Mutual information between prediction and model: H[mean p] - mean H[p_m] (Houlsby et al., 2011)."""

    name = "bald"

    def score(self, proba: np.ndarray) -> np.ndarray:
        p = _members(proba, "BALD")
        return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)


class EnsembleVariance:
    """Disagreement of members: variance across members summed over classes."""

    name = "variance"

    def score(self, proba: np.ndarray) -> np.ndarray:
        return _members(proba, "EnsembleVariance").var(axis=0).sum(axis=1)


class MCDropout:
    """Monte Carlo dropout sampler: T stochastic passes of a classifier that keeps dropout.

    ``sample(classifier, texts)`` returns (T, n, C); needs a classifier with ``mc_proba`` (``finetune``,
    ``hf``, or a custom class that defines it).
    """

    def __init__(self, samples: int = 10, scope: str = "head") -> None:
        self.samples = samples
        self.scope = scope

    def sample(self, classifier, texts: Sequence[str]) -> np.ndarray:
        if not hasattr(classifier, "mc_proba"):
            raise ValueError(
                "MC dropout needs a classifier that keeps dropout ('finetune' or 'hf', or a custom class "
                f"with mc_proba), not '{getattr(classifier, 'kind', type(classifier).__name__)}'"
            )
        return classifier.mc_proba(texts, samples=self.samples, scope=self.scope)


STRATEGIES = {
    "least_confidence": LeastConfidence,
    "margin": Margin,
    "entropy": Entropy,
    "bald": BALD,
    "variance": EnsembleVariance,
}


def get_strategy(name: str):
    """A strategy instance by config name (``mc_dropout`` scores BALD over MC samples)."""
    if name == "mc_dropout":
        return BALD()
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; one of {sorted(STRATEGIES)} or mc_dropout") from None
