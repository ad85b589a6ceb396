"""A custom target classifier for ``classifier.kind: custom``: TF-IDF features + scikit-learn's logistic
regression, with sample weights.

Use it (paths are relative to where you run the command):

    activesynth run --dataset banking77 --shots 10 --out runs/tfidf \\
        --set classifier.kind=custom \\
        --set classifier.custom=data/examples/sklearn_classifier.py:TfidfLogisticRegression \\
        --set classifier.custom_options='{C: 20}'

or in a config file::

    classifier:
      kind: custom
      custom: data/examples/sklearn_classifier.py:TfidfLogisticRegression   # or my_package.module:Class
      custom_options: {C: 20}

What the loop needs from a class (``activesynth.agent.classifier_base.Classifier``): ``fit(texts, labels,
sample_weight=None)`` returning self and setting ``classes_``, ``predict_proba(texts)`` with one column per
entry of ``classes_``, ``save(folder)`` and a classmethod ``load(folder)``. The class is imported and checked
before a run starts; anything missing is named in one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


class TfidfLogisticRegression:
    """Word and bigram TF-IDF, then multinomial logistic regression (``C``: inverse L2 strength)."""

    def __init__(self, C: float = 10.0, ngram_max: int = 2, seed: int = 0) -> None:
        self.C = C
        self.ngram_max = ngram_max
        self.seed = seed
        self.classes_: list[str] = []
        self._pipe = None

    def fit(self, texts, labels, sample_weight=None) -> TfidfLogisticRegression:
        self._pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, self.ngram_max), sublinear_tf=True, min_df=1),
            LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed),
        )
        # the loop's weights: 1 for real texts, the chosen synthetic weight for synthetic ones (0 = ignore)
        self._pipe.fit(list(texts), list(labels), logisticregression__sample_weight=sample_weight)
        self.classes_ = [str(c) for c in self._pipe.classes_]
        return self

    def predict_proba(self, texts) -> np.ndarray:
        return self._pipe.predict_proba(list(texts))  # columns follow classes_

    def save(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "model.pkl", "wb") as f:
            pickle.dump({"C": self.C, "ngram_max": self.ngram_max, "seed": self.seed, "pipe": self._pipe}, f)

    @classmethod
    def load(cls, path) -> TfidfLogisticRegression:
        with open(Path(path) / "model.pkl", "rb") as f:
            state = pickle.load(f)  # a file this class wrote; never load pickles you did not make
        obj = cls(state["C"], state["ngram_max"], state["seed"])
        obj._pipe = state["pipe"]
        obj.classes_ = [str(c) for c in obj._pipe.classes_]
        return obj
