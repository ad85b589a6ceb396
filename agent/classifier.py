"""The target classifier: one interface (:class:`Classifier`), five kinds, built by :func:`build_classifier`
and loaded by :func:`load_classifier`.

* :class:`HeadEnsemble` (``head``, default; :mod:`.heads`): K heads (logistic or a small MLP) on frozen,
  cached sentence embeddings, each fit on a stratified bootstrap resample; members disagree where data is
  thin.
* :class:`FinetuneClassifier` (``finetune``): the MiniLM body fine-tuned with mean pooling and a linear head;
  dropout stays available at inference for MC dropout.
* :class:`HFClassifier` (``hf``; :mod:`.classifier_hf`): any ``AutoModelForSequenceClassification`` fine-tuned
  with transformers' Trainer, early stopping and temperature scaling on the selection split, MC dropout.
* :class:`SetFitClassifier` (``setfit``; :mod:`.classifier_setfit`): contrastive tuning of a
  sentence-transformer body, then logistic heads on it.
* :class:`CustomClassifier` (``custom``): a user's class named ``module:Class`` (or ``path/file.py:Class``)
  that follows the :class:`Classifier` protocol; imported and checked when the classifier is built.

All take texts: ``fit(texts, labels, sample_weight=None)``, ``predict_proba(texts) -> (n, C)``,
``member_proba(texts) -> (K, n, C)``, ``save(dir)`` and ``load(dir, embedder)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.classifier_base import Classifier, FitContext
from activesynth.agent.classifier_hf import HFClassifier
from activesynth.agent.classifier_setfit import SetFitClassifier
from activesynth.agent.config import ClassifierConfig
from activesynth.agent.embed import Embedder
from activesynth.agent.files import write_json
from activesynth.agent.heads import HeadEnsemble

__all__ = [
    "KINDS",
    "Classifier",
    "CustomClassifier",
    "FinetuneClassifier",
    "FitContext",
    "HFClassifier",
    "HeadEnsemble",
    "SetFitClassifier",
    "build_classifier",
    "check_classifier",
    "load_classifier",
    "load_custom_class",
]

log = logging.getLogger(__name__)


class FinetuneClassifier:
    """The MiniLM body fine-tuned with mean pooling and a linear head; dropout kept for MC dropout.

    ``member_proba`` returns one deterministic pass (K=1); :meth:`mc_proba` samples T passes with dropout
    on. With ``mc_scope="head"`` the encoder runs once and only the dropout + head are resampled
    (cheap; reuses encoder outputs); ``"full"`` keeps dropout on in every encoder layer too.
    """

    kind = "finetune"

    def __init__(
        self,
        embedder: Embedder,
        epochs: int = 8,
        lr: float = 5e-5,
        batch_size: int = 32,
        dropout: float = 0.1,
        seed: int = 0,
        max_length: int = 128,
    ) -> None:
        self.embedder = embedder
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.dropout = dropout
        self.seed = seed
        self.max_length = max_length
        self.classes_: list[str] = []
        self._body = None
        self._tok = None
        self._head = None

    def _init(self, n_classes: int, path: str | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from activesynth.agent.embed import resolve_model_path

        src = path or resolve_model_path(self.embedder.model_name)
        torch.manual_seed(self.seed)
        self._tok = AutoTokenizer.from_pretrained(src)
        self._body = AutoModel.from_pretrained(src)
        self._drop = torch.nn.Dropout(self.dropout)
        self._head = torch.nn.Linear(self._body.config.hidden_size, n_classes)

    def _pool(self, texts: Sequence[str]):

        enc = self._tok(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        out = self._body(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> FinetuneClassifier:
        import torch

        self.classes_ = sorted(set(labels))
        index = {c: i for i, c in enumerate(self.classes_)}
        self._init(len(self.classes_))
        y = torch.tensor([index[lab] for lab in labels])
        w = (
            torch.ones(len(y))
            if sample_weight is None
            else torch.tensor(np.asarray(sample_weight), dtype=torch.float)
        )
        params = list(self._body.parameters()) + list(self._head.parameters())
        opt = torch.optim.AdamW(
            [
                {"params": self._body.parameters(), "lr": self.lr},
                {"params": self._head.parameters(), "lr": 1e-3},
            ]
        )
        rng = np.random.default_rng(self.seed)
        texts = list(texts)
        self._body.train()
        for epoch in range(self.epochs):
            order = rng.permutation(len(texts))
            total = 0.0
            for i in range(0, len(order), self.batch_size):
                b = order[i : i + self.batch_size]
                logits = self._head(self._drop(self._pool([texts[j] for j in b])))
                loss = torch.nn.functional.cross_entropy(logits, y[b], reduction="none")
                loss = (loss * w[b]).sum() / w[b].sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                total += float(loss.detach()) * len(b)
            log.info("finetune epoch %d/%d loss %.4f", epoch + 1, self.epochs, total / len(texts))
        self._body.eval()
        return self

    def _batched_pool(self, texts: Sequence[str], dropout_in_body: bool = False):
        import torch

        self._body.train(dropout_in_body)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                outs.append(self._pool(texts[i : i + 64]))
        self._body.eval()
        return torch.cat(outs) if outs else torch.zeros((0, self._head.in_features))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self._head is None:
            raise RuntimeError("classifier is not fitted")
        with torch.inference_mode():
            return torch.softmax(self._head(self._batched_pool(list(texts))), -1).numpy()

    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba(texts)[None]

    def mc_proba(self, texts: Sequence[str], samples: int = 10, scope: str = "head") -> np.ndarray:
        """(T, n, C) probabilities from T stochastic passes with dropout on."""
        import torch

        texts = list(texts)
        torch.manual_seed(self.seed)
        self._drop.train()
        out = []
        with torch.inference_mode():
            pooled = self._batched_pool(texts) if scope == "head" else None
            for _ in range(samples):
                h = pooled if pooled is not None else self._batched_pool(texts, dropout_in_body=True)
                out.append(torch.softmax(self._head(self._drop(h)), -1).numpy())
        return np.stack(out)

    def save(self, path: Path) -> None:
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._body.save_pretrained(path / "body")
        self._tok.save_pretrained(path / "body")
        torch.save(self._head.state_dict(), path / "head.pt")
        meta = {
            "kind": self.kind,
            "classes": self.classes_,
            "dropout": self.dropout,
            "seed": self.seed,
            "embedder": self.embedder.model_name,
            "max_length": self.max_length,
        }
        write_json(path / "classifier.json", meta)  # last: its presence means a complete model

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> FinetuneClassifier:
        import torch

        path = Path(path)
        meta = json.loads((path / "classifier.json").read_text())
        obj = cls(embedder, dropout=meta["dropout"], seed=meta["seed"], max_length=meta["max_length"])
        obj.classes_ = meta["classes"]
        obj._init(len(obj.classes_), path=str(path / "body"))
        obj._head.load_state_dict(torch.load(path / "head.pt", weights_only=True))
        obj._body.eval()
        return obj


# ----------------------------------------------------------------------------------------------------------
# Bring your own classifier

_NEEDS = "fit(texts, labels, sample_weight=None), predict_proba(texts), save(path), a classmethod load(path)"


def _import_spec(spec: str):
    """The module named by ``spec``'s part before the last ':' (a dotted module or a ``.py`` file)."""
    where, _, _ = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"classifier.custom: no file {where!r}")
        name = f"activesynth_custom_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ValueError(
                f"classifier.custom: cannot import {where!r} ({type(e).__name__}: {e})"
            ) from None
        return module
    try:
        return importlib.import_module(where)
    except Exception as e:
        raise ValueError(f"classifier.custom: cannot import {where!r} ({type(e).__name__}: {e})") from None


def _missing(cls: type) -> list[str]:
    """What ``cls`` lacks of the :class:`Classifier` protocol (checkable on the class, before any fit)."""
    missing = [name for name in ("fit", "predict_proba", "save") if not callable(getattr(cls, name, None))]
    load = inspect.getattr_static(cls, "load", None)
    if not isinstance(load, classmethod | staticmethod):
        missing.append("load (a classmethod)")
    fit = getattr(cls, "fit", None)
    if callable(fit):
        params = inspect.signature(fit).parameters
        takes = "sample_weight" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not takes:
            missing.append("fit's sample_weight argument")
    return missing


def load_custom_class(spec: str) -> type:
    """Import and check the class named by ``classifier.custom`` (``module:Class`` or ``path/file.py:Class``);
    any problem is a ``ValueError`` of one line naming what is missing."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"classifier.custom: expected 'module:Class' or 'path/file.py:Class', got {spec!r}")
    cls = getattr(_import_spec(spec), name, None)
    if cls is None:
        raise ValueError(f"classifier.custom: {where!r} has no class {name!r}")
    if not inspect.isclass(cls):
        raise ValueError(f"classifier.custom: {spec} is not a class")
    missing = _missing(cls)
    if missing:
        raise ValueError(
            f"classifier.custom: {spec} lacks {', '.join(missing)} (a classifier needs {_NEEDS})"
        )
    return cls


class CustomClassifier:
    """A user's classifier (``classifier.kind: custom``) behind the loop's interface: it checks what ``fit``
    and ``predict_proba`` give back, adds ``member_proba`` (one member) when the class has none, and saves the
    class name beside the model so that :func:`load_classifier` can load it."""

    kind = "custom"

    def __init__(self, spec: str, options: dict | None = None, inner=None) -> None:
        self.spec = spec
        self.options = dict(options or {})
        cls = load_custom_class(spec)
        if inner is None:
            try:
                inner = cls(**self.options)
            except TypeError as e:
                msg = f"classifier.custom_options: {spec} cannot be built with them ({e})"
                raise ValueError(msg) from None
        self.inner = inner
        if callable(getattr(inner, "mc_proba", None)):
            self.mc_proba = inner.mc_proba

    @property
    def classes_(self) -> list[str]:
        classes = getattr(self.inner, "classes_", None)
        if classes is None:
            raise ValueError(f"classifier.custom: {self.spec} did not set classes_ in fit")
        return [str(c) for c in classes]

    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> CustomClassifier:
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        fitted = self.inner.fit(list(texts), list(labels), sample_weight=w)
        self.inner = fitted if fitted is not None else self.inner
        if set(self.classes_) != set(labels):
            raise ValueError(f"classifier.custom: {self.spec}.classes_ after fit are not the training labels")
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        p = np.asarray(self.inner.predict_proba(texts), dtype=np.float64)
        if p.shape != (len(texts), len(self.classes_)):
            raise ValueError(
                f"classifier.custom: {self.spec}.predict_proba gave shape {p.shape}, "
                f"expected ({len(texts)}, {len(self.classes_)})"
            )
        return p

    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        if callable(getattr(self.inner, "member_proba", None)):
            return np.asarray(self.inner.member_proba(list(texts)))
        return self.predict_proba(texts)[None]

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.inner.save(path / "custom")
        where = self.spec.rpartition(":")[0]
        file = str(Path(where).expanduser().resolve()) if where.endswith(".py") or "/" in where else None
        meta = {"kind": self.kind, "custom": self.spec, "file": file, "options": self.options}
        meta["classes"] = self.classes_
        write_json(path / "classifier.json", meta)  # last: its presence means a complete model

    @classmethod
    def load(cls, path: Path, embedder: Embedder | None = None) -> CustomClassifier:
        path = Path(path)
        meta = json.loads((path / "classifier.json").read_text())
        spec = meta["custom"]
        if meta.get("file") and not Path(spec.rpartition(":")[0]).expanduser().is_file():
            spec = f"{meta['file']}:{spec.rpartition(':')[2]}"  # saved from another working folder
        inner = load_custom_class(spec).load(path / "custom")
        obj = cls(meta["custom"], meta.get("options"), inner=inner)
        obj.spec = spec
        return obj


# ----------------------------------------------------------------------------------------------------------
# Build and load

KINDS = ("head", "finetune", "hf", "setfit", "custom")


def check_classifier(cfg: ClassifierConfig) -> None:
    """Checks that need more than the schema (a custom class is imported and checked); a ``ValueError`` of
    one line, raised before any folder or model is made."""
    if cfg.kind == "custom":
        assert cfg.custom is not None  # the schema says so
        load_custom_class(cfg.custom)


def build_classifier(cfg: ClassifierConfig, embedder: Embedder):
    """A fresh classifier as the config says."""
    if cfg.kind == "head":
        return HeadEnsemble(embedder, cfg.n_heads, cfg.head, cfg.C, cfg.bootstrap, cfg.seed, cfg.predict)
    if cfg.kind == "hf":
        return HFClassifier(
            embedder,
            cfg.model,
            epochs=cfg.epochs,
            lr=cfg.lr,
            head_lr=cfg.head_lr,
            batch_size=cfg.batch_size,
            max_steps=cfg.max_steps,
            patience=cfg.patience,
            temperature=cfg.temperature,
            max_length=cfg.max_length,
            seed=cfg.seed,
        )
    if cfg.kind == "setfit":
        return SetFitClassifier(
            embedder,
            cfg.model,
            pairs=cfg.pairs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            max_steps=cfg.max_steps,
            max_length=cfg.max_length,
            contrastive_synthetic=cfg.contrastive_synthetic,
            n_heads=cfg.n_heads,
            head=cfg.head,
            C=cfg.C,
            bootstrap=cfg.bootstrap,
            predict=cfg.predict,
            seed=cfg.seed,
        )
    if cfg.kind == "custom":
        assert cfg.custom is not None  # the schema says so
        return CustomClassifier(cfg.custom, cfg.custom_options)
    return FinetuneClassifier(embedder, cfg.epochs, cfg.lr, cfg.batch_size, cfg.dropout, cfg.seed)


_LOADERS = {
    "head": HeadEnsemble,
    "finetune": FinetuneClassifier,
    "hf": HFClassifier,
    "setfit": SetFitClassifier,
    "custom": CustomClassifier,
}


def load_classifier(path: Path, embedder: Embedder):
    """Load a saved classifier of any kind."""
    kind = json.loads((Path(path) / "classifier.json").read_text())["kind"]
    if kind not in _LOADERS:
        raise ValueError(f"{path}: unknown classifier kind {kind!r}")
    return _LOADERS[kind].load(path, embedder)
