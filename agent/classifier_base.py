"""What every target classifier shares: the :class:`Classifier` protocol, the :class:`FitContext` the loop
hands to classifiers that can use it, and small numeric helpers (softmax, temperature scaling, torch threads).

The classifier kinds live in their own modules (:mod:`.heads`, :mod:`.classifier_hf`,
:mod:`.classifier_setfit`); :mod:`activesynth.agent.classifier` builds and loads any of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Classifier", "FitContext", "fit_temperature", "softmax", "torch_threads"]


@runtime_checkable
class Classifier(Protocol):
    """The contract of a target classifier (built-in kinds and ``classifier.kind: custom`` alike).

    * ``classes_``: the class labels, set by ``fit``; the column order of ``predict_proba``. The loop
      trains on every label of the real training texts, so after ``fit`` it holds exactly the labels seen
      (any order; the built-in kinds sort them).
    * ``fit(texts, labels, sample_weight=None) -> self``: train from scratch on ``texts`` (list of str) and
      ``labels`` (list of str, aligned). ``sample_weight`` is None or an (n,) float array, >= 0; a text's
      loss counts in proportion to its weight (the loop gives real texts 1, synthetic texts the chosen
      synthetic weight, rescaled per class). A weight of 0 must not influence the fit.
    * ``predict_proba(texts) -> np.ndarray``: (n, len(classes_)) probabilities, rows summing to 1.
    * ``save(path)``: write everything needed into the folder ``path`` (it may not exist yet).
    * ``load(path)`` (a classmethod): the saved classifier, predicting exactly as before it was saved.

    Optional: ``member_proba(texts) -> (K, n, C)`` (ensemble members, for BALD / variance) and
    ``mc_proba(texts, samples, scope) -> (T, n, C)`` (MC dropout). The built-in kinds' ``load`` also takes
    the run's embedder (``load(path, embedder)``); a custom class's ``load`` takes only the path.
    """

    classes_: list[str]

    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> Classifier: ...
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...
    def save(self, path: Path) -> None: ...


@dataclass
class FitContext:
    """What the loop knows beyond the training rows, for classifiers that define ``set_context``.

    Attributes:
        n_real: the first ``n_real`` training rows are real texts, the rest synthetic (None: all real).
        eval_texts / eval_labels: the selection split (early stopping, temperature scaling); None: none.
        previous: the current model of the loop (the previous round's saved model), for warm starts;
            None starts from the pretrained weights.
    """

    n_real: int | None = None
    eval_texts: list[str] | None = None
    eval_labels: list[str] | None = None
    previous: Any = None


@contextlib.contextmanager
def torch_threads(n: int):
    """Run small torch problems on ``n`` threads: on a busy 2-core machine, OpenMP threads that wait
    for each other made a 0.5 s L-BFGS fit take minutes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_t: float = 100.0) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` for gold indices ``y`` (one
    scalar, L-BFGS on log T so that T stays positive); 1.0 when there is nothing to fit on."""
    import torch

    if len(y) == 0:
        return 1.0
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), yt)
        loss.backward()
        return loss

    with torch_threads(1):
        opt.step(closure)
    t = float(log_t.detach().exp())
    return float(min(max(t, 1.0 / max_t), max_t)) if np.isfinite(t) else 1.0
