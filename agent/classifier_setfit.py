"""``classifier.kind: setfit``: SetFit's two stages written with sentence-transformers (the ``setfit``
package is not needed).

1. Contrastive tuning of the sentence-transformer body (``classifier.model``, by default the bundled
   all-MiniLM-L6-v2) on ``pairs`` seeded text pairs, half from one label (target cosine 1) and half from two
   labels (target 0), with sentence-transformers' ``CosineSimilarityLoss``, one pass. Pairs come from the real
   training texts only unless ``contrastive_synthetic`` (the loop says which rows are real through
   :class:`FitContext`), so by default the tuned body never depends on synthetic labels or weights.
2. A :class:`HeadEnsemble` (logistic heads, sample weights honoured) on the tuned body's normalised
   embeddings; its members give ``member_proba`` for BALD / variance like the ``head`` kind.

Stage 1 does not depend on the sample weights, so the loop tunes the body once per round and chooses the
synthetic weight with heads on it (``proxy_features``): exact, not a proxy, for ``predict: full``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.classifier_base import FitContext
from activesynth.agent.embed import Embedder, resolve_model_path
from activesynth.agent.files import write_json
from activesynth.agent.heads import HeadEnsemble

__all__ = ["SetFitClassifier", "contrastive_pairs"]

log = logging.getLogger(__name__)


def contrastive_pairs(
    labels: Sequence[str], n: int, rng: np.random.Generator
) -> list[tuple[int, int, float]]:
    """``n`` index pairs (i, j, target): even draws pair a text with another of its label (target 1.0),
    odd draws with a text of another label (0.0). Anchors are drawn uniformly over labels, then texts, so
    small classes are not starved; labels with one text only take part in negative pairs."""
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    names = sorted(by_label)
    multi = [c for c in names if len(by_label[c]) > 1]
    if len(names) < 2:
        raise ValueError("contrastive pairs need at least two labels")
    out = []
    for k in range(n):
        if k % 2 == 0 and multi:
            members = by_label[multi[rng.integers(len(multi))]]
            i, j = rng.choice(members, size=2, replace=False)
            out.append((int(i), int(j), 1.0))
        else:
            a, b = rng.choice(len(names), size=2, replace=False)
            ia, ib = by_label[names[a]], by_label[names[b]]
            out.append((int(ia[rng.integers(len(ia))]), int(ib[rng.integers(len(ib))]), 0.0))
    return out


class _TunedBody:
    """The tuned sentence-transformer as an embedder: ``encode(texts)`` gives normalised vectors; each text
    is encoded once."""

    def __init__(self, body, model_name: str, batch_size: int = 64) -> None:
        self.body = body
        self.model_name = model_name
        self.batch_size = batch_size
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self.body.eval()
            with torch.inference_mode():
                vecs = self.body.encode(
                    missing,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            self._memo.update(zip(missing, np.asarray(vecs, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, self.body.get_sentence_embedding_dimension()), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


class SetFitClassifier:
    """Contrastively tuned sentence-transformer body + logistic heads (see the module docstring).

    Args:
        embedder: the run's embedder (only its name is recorded).
        model: a bundled model name, a local sentence-transformers folder or a hub id.
        pairs: contrastive pairs (one pass); lr, batch_size (pairs per step), max_steps (a cap on steps),
        max_length (tokens per text), contrastive_synthetic (pairs from synthetic rows too);
        n_heads, head, C, bootstrap, predict: the :class:`HeadEnsemble` on the tuned body; seed.
    """

    kind = "setfit"

    def __init__(
        self,
        embedder: Embedder,
        model: str = "all-MiniLM-L6-v2",
        pairs: int = 320,
        lr: float = 5e-5,
        batch_size: int = 32,
        max_steps: int | None = None,
        max_length: int = 128,
        contrastive_synthetic: bool = False,
        n_heads: int = 5,
        head: str = "logistic",
        C: float = 10.0,
        bootstrap: bool = True,
        predict: str = "full",
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.model = model
        self.pairs = pairs
        self.lr = lr
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.max_length = max_length
        self.contrastive_synthetic = contrastive_synthetic
        self.head_settings = {
            "n_heads": n_heads,
            "head": head,
            "C": C,
            "bootstrap": bootstrap,
            "predict": predict,
        }
        self.seed = seed
        self.classes_: list[str] = []
        self.contrastive_: dict = {}  # what stage 1 did: pairs, steps, seconds, mean loss
        self._context = FitContext()
        self._encoder: _TunedBody | None = None
        self._tuned_key: str | None = None
        self._head: HeadEnsemble | None = None

    def set_context(self, context: FitContext) -> None:
        """What the loop knows: which rows are real (pairs) and the warm-start model."""
        self._context = context

    # -- stage 1: contrastive tuning ----------------------------------------------------------------
    def _start_body(self):
        from sentence_transformers import SentenceTransformer

        prev = self._context.previous
        if isinstance(prev, SetFitClassifier) and prev._encoder is not None and prev.model == self.model:
            return copy.deepcopy(prev._encoder.body)
        body = SentenceTransformer(resolve_model_path(self.model), device="cpu")
        body.max_seq_length = self.max_length
        return body

    def prepare(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        """Tune the body on pairs of the (real, unless ``contrastive_synthetic``) training rows; skipped when
        it is already tuned on the same rows (the loop tunes once and then fits heads per weight)."""
        n = len(texts) if self.contrastive_synthetic or self._context.n_real is None else self._context.n_real
        texts, labels = list(texts)[:n], list(labels)[:n]
        prev = self._context.previous
        key = hashlib.sha256(
            json.dumps([texts, labels, self.model, self.pairs, self.lr, self.seed, id(prev)]).encode()
        ).hexdigest()
        if key == self._tuned_key and self._encoder is not None:
            return
        body = self._start_body()
        self._tune(body, texts, labels)
        self._encoder = _TunedBody(body, self.model)
        self._tuned_key = key

    def _tune(self, body, texts: list[str], labels: list[str]) -> None:
        import time

        import torch
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

        t0 = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        pairs = contrastive_pairs(labels, self.pairs, rng)
        steps = -(-len(pairs) // self.batch_size)
        if self.max_steps:
            steps = min(steps, self.max_steps)
        loss_fn = CosineSimilarityLoss(body)
        opt = torch.optim.AdamW(body.parameters(), lr=self.lr, weight_decay=0.01)
        warm = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
        )
        body.train()
        losses = []
        for s in range(steps):
            batch = pairs[s * self.batch_size : (s + 1) * self.batch_size]
            a = body.preprocess([texts[i] for i, _, _ in batch])
            b = body.preprocess([texts[j] for _, j, _ in batch])
            loss = loss_fn([a, b], torch.tensor([t for _, _, t in batch]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        body.eval()
        seconds = time.perf_counter() - t0
        self.contrastive_ = {
            "pairs": len(pairs),
            "steps": steps,
            "seconds": round(seconds, 2),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
        }
        log.info("setfit: contrastive stage %d steps in %.1f s (loss %s)", steps, seconds, self.contrastive_)

    def proxy_features(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of the tuned body (``prepare`` first)."""
        if self._encoder is None:
            raise RuntimeError("call prepare() before proxy_features()")
        return self._encoder.encode(texts)

    # -- stage 2: heads -----------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> SetFitClassifier:
        """Tune the body (unless already tuned on these rows), then fit the heads with ``sample_weight``."""
        texts, labels = list(texts), list(labels)
        if len(set(labels)) < 2:
            raise ValueError("need at least two classes to fit a classifier")
        self.prepare(texts, labels)
        assert self._encoder is not None
        X = self._encoder.encode(texts)
        self._head = HeadEnsemble(self._encoder, seed=self.seed, **self.head_settings)
        self._head.fit_embeddings(X, labels, sample_weight)
        self.classes_ = list(self._head.classes_)
        return self

    def _fitted(self) -> HeadEnsemble:
        if self._head is None:
            raise RuntimeError("classifier is not fitted")
        return self._head

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) probabilities of the point prediction (head 0 unless ``predict: ensemble``)."""
        return self._fitted().predict_proba(texts)

    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(K, n, C) probabilities of the heads."""
        return self._fitted().member_proba(texts)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(axis=1)]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        head = self._fitted()
        assert self._encoder is not None
        self._encoder.body.save(str(path / "body"))
        head.save(path / "head")
        meta = {
            "kind": self.kind,
            "classes": self.classes_,
            "model": self.model,
            "max_length": self.max_length,
            "seed": self.seed,
            "contrastive": self.contrastive_,
            "embedder": self.embedder.model_name,
        }
        write_json(path / "classifier.json", meta)  # last: its presence means a complete model

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> SetFitClassifier:
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        meta = json.loads((path / "classifier.json").read_text())
        obj = cls(embedder, model=meta["model"], max_length=meta["max_length"], seed=meta["seed"])
        obj._encoder = _TunedBody(SentenceTransformer(str(path / "body"), device="cpu"), meta["model"])
        obj._head = HeadEnsemble.load(path / "head", obj._encoder)  # type: ignore[arg-type]
        obj.head_settings = {
            "n_heads": obj._head.n_heads,
            "head": obj._head.head,
            "C": obj._head.C,
            "bootstrap": obj._head.bootstrap,
            "predict": obj._head.predict_with,
        }
        obj.classes_ = list(obj._head.classes_)
        obj.contrastive_ = meta.get("contrastive") or {}
        return obj
