"""Heads on frozen, cached sentence embeddings: :class:`HeadEnsemble` (``classifier.kind: head``, the default,
and the heads of ``setfit``). K heads (logistic or a small MLP), head 0 on all data, the others on Bayesian
bootstrap weights; members disagree where data is thin."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.classifier_base import softmax, torch_threads
from activesynth.agent.embed import Embedder
from activesynth.agent.files import write_json

__all__ = ["HeadEnsemble"]


def _stratified_bootstrap(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        idx.append(rng.choice(members, size=len(members), replace=True))
    return np.concatenate(idx)


class HeadEnsemble:
    """An ensemble of heads on frozen embeddings (see module docstring).

    Args:
        embedder: computes (and caches) embeddings of the texts.
        n_heads: ensemble size K.
        head: ``"logistic"`` (multinomial, L2 with strength 1/C) or ``"mlp"`` (one hidden layer).
        C: inverse regularisation of the logistic heads.
        bootstrap: fit each head on a stratified bootstrap resample (head 0 always sees all data).
        seed: seed of resamples and initialisation.
        predict: ``"full"``: predictions come from head 0, fit on all data with its plain weights (the
            resampled members only measure disagreement); ``"ensemble"``: the members' mean.
    """

    kind = "head"

    def __init__(
        self,
        embedder: Embedder,
        n_heads: int = 5,
        head: str = "logistic",
        C: float = 10.0,
        bootstrap: bool = True,
        seed: int = 0,
        predict: str = "full",
    ) -> None:
        if head not in {"logistic", "mlp"}:
            raise ValueError(f"head must be 'logistic' or 'mlp', not {head!r}")
        if predict not in {"full", "ensemble"}:
            raise ValueError(f"predict must be 'full' or 'ensemble', not {predict!r}")
        self.predict_with = predict
        self.embedder = embedder
        self.n_heads = n_heads
        self.head = head
        self.C = C
        self.bootstrap = bootstrap
        self.seed = seed
        self.classes_: list[str] = []
        self._params: list[dict[str, np.ndarray]] = []

    # -- training ----------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> HeadEnsemble:
        """Fit K heads on the embeddings of ``texts``; ``sample_weight`` scales each text's loss."""
        X = self.embedder.encode(list(texts))
        return self.fit_embeddings(X, labels, sample_weight)

    def fit_embeddings(self, X: np.ndarray, labels: Sequence[str], sample_weight=None) -> HeadEnsemble:
        """Fit on precomputed embeddings (rows aligned with ``labels``)."""
        self.classes_ = sorted(set(labels))
        if len(self.classes_) < 2:
            raise ValueError("need at least two classes to fit a classifier")
        index = {c: i for i, c in enumerate(self.classes_)}
        y = np.array([index[lab] for lab in labels])
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        rng = np.random.default_rng(self.seed)
        self._params = []
        with torch_threads(1):
            self._fit_heads(X, y, w, rng)
        return self

    def _fit_heads(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> None:
        for k in range(self.n_heads):
            fit = self._fit_logistic if self.head == "logistic" else self._fit_mlp
            if k == 0 or not self.bootstrap:
                self._params.append(fit(X, y, w, seed=self.seed + k))
            else:
                # Bayesian bootstrap: every text stays in, with Exp(1) weights (normalised per class),
                # so members disagree where the data is thin without dropping whole examples.
                bw = rng.exponential(1.0, size=len(y))
                for c in np.unique(y):
                    m = y == c
                    bw[m] *= m.sum() / bw[m].sum()
                self._params.append(fit(X, y, w * bw, seed=self.seed + k))

    def _fit_logistic(self, X, y, w, seed) -> dict[str, np.ndarray]:
        """Multinomial logistic regression, minimising sum_i w_i CE_i + ||W||^2 / (2C) with L-BFGS.

        The same objective as scikit-learn's ``LogisticRegression(C=C)``; full-batch L-BFGS in torch is
        about two orders of magnitude faster here on cached embeddings.
        """
        import torch

        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).double()
        yt = torch.from_numpy(y).long()
        wt = torch.from_numpy(np.asarray(w, dtype=np.float64))
        n_classes = len(self.classes_)
        W = torch.zeros((n_classes, X.shape[1]), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [W, b],
            lr=1,
            max_iter=500,
            tolerance_grad=1e-6,
            tolerance_change=1e-10,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            ce = torch.nn.functional.cross_entropy(Xt @ W.T + b, yt, reduction="none")
            loss = (ce * wt).sum() + (W * W).sum() / (2 * self.C)
            loss.backward()
            return loss

        opt.step(closure)
        Wn = W.detach().numpy().astype(np.float32)
        bn = b.detach().numpy().astype(np.float32)
        present = np.zeros(n_classes, dtype=bool)
        present[np.unique(y)] = True
        bn[~present] = -1e4  # a class missing from a resample gets no mass
        return {"W": Wn, "b": bn}

    def _fit_mlp(self, X, y, w, seed, hidden: int = 256, epochs: int = 300) -> dict[str, np.ndarray]:
        import torch

        g = torch.Generator().manual_seed(seed)
        Xt, yt = torch.from_numpy(X).float(), torch.from_numpy(y).long()
        wt = torch.from_numpy(w).float()
        l1 = torch.nn.Linear(X.shape[1], hidden)
        l2 = torch.nn.Linear(hidden, len(self.classes_))
        for layer in (l1, l2):
            torch.nn.init.normal_(layer.weight, std=0.02, generator=g)
            torch.nn.init.zeros_(layer.bias)
        params = list(l1.parameters()) + list(l2.parameters())
        opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=1.0 / (self.C * len(y)))
        for _ in range(epochs):
            opt.zero_grad()
            logits = l2(torch.relu(l1(Xt)))
            loss = (torch.nn.functional.cross_entropy(logits, yt, reduction="none") * wt).sum() / wt.sum()
            loss.backward()
            opt.step()
        return {
            "W1": l1.weight.detach().numpy().copy(),
            "b1": l1.bias.detach().numpy().copy(),
            "W": l2.weight.detach().numpy().copy(),
            "b": l2.bias.detach().numpy().copy(),
        }

    # -- inference ---------------------------------------------------------------------------
    def _logits(self, p: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        if "W1" in p:
            X = np.maximum(X @ p["W1"].T + p["b1"], 0)
        return X @ p["W"].T + p["b"]

    def member_proba_embeddings(self, X: np.ndarray) -> np.ndarray:
        if not self._params:
            raise RuntimeError("classifier is not fitted")
        return np.stack([softmax(self._logits(p, X)) for p in self._params]).astype(np.float32)

    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(K, n, C) class probabilities of each head."""
        return self.member_proba_embeddings(self.embedder.encode(list(texts)))

    def predict_proba_embeddings(self, X: np.ndarray) -> np.ndarray:
        """(n, C) probabilities of the point prediction (head 0, or the members' mean; see ``predict``)."""
        if not self._params:
            raise RuntimeError("classifier is not fitted")
        if self.predict_with == "full":
            return softmax(self._logits(self._params[0], X)).astype(np.float32)
        return self.member_proba_embeddings(X).mean(axis=0)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) class probabilities of the point prediction."""
        return self.predict_proba_embeddings(self.embedder.encode(list(texts)))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(axis=1)]

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "classes": self.classes_,
            "n_heads": self.n_heads,
            "head": self.head,
            "C": self.C,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "predict": self.predict_with,
            "embedder": self.embedder.model_name,
        }
        arrays = {f"{k}__{name}": v for k, p in enumerate(self._params) for name, v in p.items()}
        np.savez(path / "heads.npz", **arrays)
        write_json(path / "classifier.json", meta)  # last: its presence means a complete model

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> HeadEnsemble:
        path = Path(path)
        meta = json.loads((path / "classifier.json").read_text())
        obj = cls(
            embedder,
            meta["n_heads"],
            meta["head"],
            meta["C"],
            meta["bootstrap"],
            meta["seed"],
            meta.get("predict", "ensemble"),  # models saved before the option predicted with the mean
        )
        obj.classes_ = meta["classes"]
        with np.load(path / "heads.npz") as z:
            params: dict[int, dict[str, np.ndarray]] = {}
            for key in z.files:
                k, name = key.split("__")
                params.setdefault(int(k), {})[name] = z[key]
        obj._params = [params[k] for k in sorted(params)]
        return obj
