"""``classifier.kind: hf``: any ``AutoModelForSequenceClassification`` (a local folder or a hub id; by default
the bundled all-MiniLM-L6-v2 folder) fine-tuned with transformers' ``Trainer``.

* Sample weights enter a weighted cross-entropy (``Trainer.compute_loss`` overridden): the weights are scaled
  to mean 1 over the training rows and each batch's loss is the mean of weight × CE, so a weight-0 text adds
  no gradient and a batch of low-weight synthetic texts stays low-weight.
* With a selection split (the loop passes one through :class:`FitContext`), the model is scored on it after
  every epoch; training stops after ``patience`` epochs without a better macro-F1 and the best epoch's
  weights are kept. Seeded (head initialisation, shuffling, dropout).
* Then one temperature T is fitted on the selection split (L-BFGS on the NLL of softmax(logits / T)) and
  stored with the model, so probabilities and margins are calibrated where the filters read them.
* ``predict_proba`` runs in batches and remembers each text's logits (the loop asks for the same test and
  dev texts several times per round); ``mc_proba`` samples T passes with dropout on (MC dropout): scope
  ``head`` runs the encoder once per batch and resamples only the dropout of the classification head,
  ``full`` keeps dropout on in the encoder too.
* ``proxy_features`` (mean-pooled, L2-normalised outputs of the frozen starting body) let the loop choose the
  synthetic weight with cheap logistic heads before the one fine-tune (``classifier.weight_selection``).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.classifier_base import FitContext, fit_temperature, softmax
from activesynth.agent.embed import Embedder, resolve_model_path
from activesynth.agent.files import write_json

__all__ = ["HFClassifier"]

log = logging.getLogger(__name__)

_BATCH = 64  # texts per inference pass


class HFClassifier:
    """A sequence-classification transformer fine-tuned end to end (see the module docstring).

    Args:
        embedder: the run's embedder (its vectors are the weight-choice proxy when it is the same model).
        model: a bundled model name, a local folder or a hub id.
        epochs: most epochs; lr / head_lr: learning rates of the body / of the new head;
        batch_size, max_steps (None: epochs decide), patience (epochs without a gain before stopping),
        temperature (fit T on the selection split), max_length (tokens per text), seed.
    """

    kind = "hf"

    def __init__(
        self,
        embedder: Embedder,
        model: str = "all-MiniLM-L6-v2",
        epochs: int = 8,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        batch_size: int = 32,
        max_steps: int | None = None,
        patience: int = 2,
        temperature: bool = True,
        max_length: int = 128,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.model = model
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.patience = patience
        self.temperature = temperature
        self.max_length = max_length
        self.seed = seed
        self.classes_: list[str] = []
        self.temperature_ = 1.0
        self.history_: list[dict] = []  # per epoch: selection macro-F1 (when there is a selection split)
        self._context = FitContext()
        self._model = None
        self._tok = None
        self._fresh = False  # the loaded weights are the starting point (nothing trained on them yet)
        self._logits: dict[str, np.ndarray] = {}

    def set_context(self, context: FitContext) -> None:
        """What the loop knows: the selection split (early stopping, temperature) and the warm-start model."""
        self._context = context

    # -- the starting point -----------------------------------------------------------------------
    def _warm_source(self):
        prev = self._context.previous
        if isinstance(prev, HFClassifier) and prev._model is not None and prev.model == self.model:
            if list(prev.classes_) == list(self.classes_):
                return prev
            log.warning("warm start skipped: the previous model has other classes")
        return None

    def _start(self) -> None:
        """Load the starting weights: the previous model's (warm start) or the pretrained body and a new
        head."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

        self._logits = {}
        prev = self._warm_source()
        if prev is not None:
            self._tok, self._model = prev._tok, copy.deepcopy(prev._model)
        else:
            src = resolve_model_path(self.model)
            set_seed(self.seed)
            self._tok = AutoTokenizer.from_pretrained(src)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                src,
                num_labels=len(self.classes_),
                id2label=dict(enumerate(self.classes_)),
                label2id={c: i for i, c in enumerate(self.classes_)},
            )
        self._model.eval()
        self._fresh = True

    def prepare(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        """Set the classes of a coming ``fit`` (the weight-independent part of training; nothing to tune)."""
        self.classes_ = sorted(set(labels))

    # -- training -----------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str], sample_weight=None) -> HFClassifier:
        """Fine-tune on ``texts`` with a weighted cross-entropy; early stopping and temperature on the
        selection split of the context, when there is one."""
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("need at least two classes to fit a classifier")
        if classes != self.classes_ or not self._fresh or self._model is None:
            self.classes_ = classes
            self._start()
        index = {c: i for i, c in enumerate(self.classes_)}
        y = np.array([index[lab] for lab in labels])
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if len(w) != len(y) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sample_weight needs one non-negative weight per text, not all zero")
        evalset = self._eval_set(index)
        self._fresh = False
        self.history_ = []
        self._train(list(texts), y, w / w.mean(), evalset)
        self._logits = {}
        self.temperature_ = 1.0
        if self.temperature and evalset is not None:
            self.temperature_ = fit_temperature(self._raw_logits(evalset[0]), evalset[1])
            log.info("hf: temperature %.3f on %d selection texts", self.temperature_, len(evalset[1]))
        return self

    def _eval_set(self, index: dict[str, int]) -> tuple[list[str], np.ndarray] | None:
        ctx = self._context
        if not ctx.eval_texts or not ctx.eval_labels:
            return None
        keep = [i for i, lab in enumerate(ctx.eval_labels) if lab in index]
        if not keep:
            return None
        return [ctx.eval_texts[i] for i in keep], np.array([index[ctx.eval_labels[i]] for i in keep])

    def _train(self, texts: list[str], y: np.ndarray, w: np.ndarray, evalset) -> None:
        from transformers import TrainingArguments
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        steps = self.max_steps or self.epochs * -(-len(texts) // self.batch_size)
        enc = self._tok(texts, truncation=True, max_length=self.max_length)
        rows = [
            {**{k: enc[k][i] for k in enc}, "labels": int(y[i]), "sample_weight": float(w[i])}
            for i in range(len(texts))
        ]
        stopper = _best_epoch_callback(self, evalset) if evalset is not None else None
        with tempfile.TemporaryDirectory(prefix="activesynth-hf-") as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                per_device_train_batch_size=self.batch_size,
                num_train_epochs=self.epochs,
                max_steps=self.max_steps or -1,
                learning_rate=self.lr,
                weight_decay=0.01,
                warmup_steps=int(0.1 * steps),
                max_grad_norm=1.0,
                save_strategy="no",
                logging_strategy="no",
                report_to="none",
                disable_tqdm=True,
                seed=self.seed,
                data_seed=self.seed,
                use_cpu=True,
                dataloader_num_workers=0,
                remove_unused_columns=False,
            )
            trainer = _weighted_trainer_class()(
                model=self._model,
                args=args,
                train_dataset=rows,
                data_collator=_Collator(self._tok),
                optimizers=(self._optimizer(), None),
                callbacks=[stopper] if stopper is not None else None,
            )
            for cb in (PrinterCallback, ProgressCallback):
                trainer.remove_callback(cb)
            trainer.train()
        self._model.eval()
        if stopper is not None:
            stopper.finish(trainer.state)

    def _optimizer(self):
        """AdamW with the body at ``lr`` and everything else (the new head) at ``head_lr``."""
        import torch

        body = {id(p) for p in self._model.base_model.parameters()}
        params = [p for p in self._model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if id(p) in body], "lr": self.lr},
            {"params": [p for p in params if id(p) not in body], "lr": self.head_lr},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)

    def selection_f1(self, texts: list[str], y: np.ndarray) -> float:
        """Macro-F1 of the current weights on ``texts`` (gold indices ``y``), over the classes present."""
        pred = self._raw_logits(texts).argmax(axis=1)
        f1 = []
        for c in np.unique(y):
            tp = float(((pred == c) & (y == c)).sum())
            denom = float((pred == c).sum() + (y == c).sum())
            f1.append(2 * tp / denom if denom else 0.0)
        return float(np.mean(f1))

    # -- inference ----------------------------------------------------------------------------------
    def _encode(self, texts: list[str]):
        return self._tok(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _raw_logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) logits of the model in eval mode, in batches (texts sorted by length to pad less)."""
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        was_training = self._model.training
        self._model.eval()
        with torch.inference_mode():
            for i in range(0, len(order), _BATCH):
                idx = order[i : i + _BATCH]
                logits = self._model(**self._encode([texts[j] for j in idx])).logits
                out[idx] = logits.float().numpy()
        self._model.train(was_training)
        return out

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) logits of ``texts``, each text computed once per fitted model."""
        if self._model is None or self._fresh:
            raise RuntimeError("classifier is not fitted")
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._logits))
        if missing:
            self._logits.update(zip(missing, self._raw_logits(missing), strict=True))
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return np.stack([self._logits[t] for t in texts])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) temperature-scaled class probabilities."""
        return softmax(self.logits(texts) / self.temperature_).astype(np.float32)

    def member_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(1, n, C): one deterministic model (use ``mc_proba`` for samples)."""
        return self.predict_proba(texts)[None]

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def mc_proba(self, texts: Sequence[str], samples: int = 10, scope: str = "head") -> np.ndarray:
        """(T, n, C) temperature-scaled probabilities from T passes with dropout on (seeded)."""
        import torch

        if self._model is None:
            raise RuntimeError("classifier is not fitted")
        texts = list(texts)
        out = np.zeros((samples, len(texts), len(self.classes_)), dtype=np.float32)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            for i in range(0, len(texts), _BATCH):
                enc = self._encode(texts[i : i + _BATCH])
                out[:, i : i + _BATCH] = self._mc_batch(enc, samples, scope)
        self._model.eval()
        return softmax(out / self.temperature_).astype(np.float32)

    def _mc_batch(self, enc, samples: int, scope: str) -> np.ndarray:
        import torch

        model, base = self._model, self._model.base_model
        if scope != "head":
            model.train()
            return np.stack([model(**enc).logits.float().numpy() for _ in range(samples)])
        model.eval()
        cached = base(**{k: v for k, v in enc.items()})  # the encoder once; only the head is resampled
        inside = {id(m) for m in base.modules()}
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout) and id(m) not in inside:
                m.train()
        base.forward = lambda *a, **k: cached
        try:
            return np.stack([model(**enc).logits.float().numpy() for _ in range(samples)])
        finally:
            del base.forward
            model.eval()

    # -- the weight-choice proxy --------------------------------------------------------------------
    def proxy_features(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings of the frozen starting body (the run's cached embedder when
        it is the same model and there is no warm start)."""
        import torch

        texts = list(texts)
        same = resolve_model_path(self.model) == resolve_model_path(self.embedder.model_name)
        if same and self._warm_source() is None:
            return self.embedder.encode(texts)
        if self._model is None or not self._fresh:
            self._start()
        base = self._model.base_model
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), _BATCH):
                enc = self._encode(texts[i : i + _BATCH])
                hidden = base(**enc)[0]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().numpy())
        X = np.concatenate(out) if out else np.zeros((0, base.config.hidden_size), dtype=np.float32)
        return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(path / "model")
        self._tok.save_pretrained(path / "model")
        meta = {
            "kind": self.kind,
            "classes": self.classes_,
            "model": self.model,
            "temperature": self.temperature_,
            "max_length": self.max_length,
            "seed": self.seed,
            "epochs_run": self.history_,
            "embedder": self.embedder.model_name,
        }
        write_json(path / "classifier.json", meta)  # last: its presence means a complete model

    @classmethod
    def load(cls, path: Path, embedder: Embedder) -> HFClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta = json.loads((path / "classifier.json").read_text())
        obj = cls(embedder, model=meta["model"], max_length=meta["max_length"], seed=meta["seed"])
        obj.classes_ = list(meta["classes"])
        obj.temperature_ = float(meta["temperature"])
        obj.history_ = list(meta.get("epochs_run") or [])
        obj._tok = AutoTokenizer.from_pretrained(path / "model")
        obj._model = AutoModelForSequenceClassification.from_pretrained(path / "model")
        obj._model.eval()
        return obj


class _Collator:
    """Pads token ids per batch; labels and sample weights become tensors."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        tokens = [{k: v for k, v in r.items() if k not in ("labels", "sample_weight")} for r in rows]
        batch = dict(self.tokenizer.pad(tokens, return_tensors="pt"))
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        batch["sample_weight"] = torch.tensor([r["sample_weight"] for r in rows], dtype=torch.float32)
        return batch


def weighted_cross_entropy(logits, labels, weights):
    """mean_i(w_i × CE_i): with weights of mean 1 over the training rows, a weight-0 row adds nothing."""
    import torch

    ce = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * weights).mean()


def _weighted_trainer_class():
    """``transformers.Trainer`` whose loss is the weighted cross-entropy of each batch (lazy import)."""
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("sample_weight")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = weighted_cross_entropy(outputs.logits, labels, weights)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def _best_epoch_callback(clf: HFClassifier, evalset):
    """A callback that scores the selection split after every epoch, keeps the best weights and stops
    after ``clf.patience`` epochs without a gain (lazy import of transformers)."""
    from transformers import TrainerCallback

    class BestEpoch(TrainerCallback):
        def __init__(self) -> None:
            self.best: float | None = None
            self.state: dict | None = None
            self.bad = 0
            self.scored_step = -1
            clf.history_ = []

        def score(self, epoch: float, step: int) -> None:
            f1 = clf.selection_f1(*evalset)
            clf.history_.append({"epoch": round(epoch, 3), "selection_macro_f1": f1})
            log.info("hf: epoch %.2f selection macro-F1 %.4f", epoch, f1)
            self.scored_step = step
            if self.best is None or f1 > self.best + 1e-9:
                self.best, self.bad = f1, 0
                self.state = {k: v.detach().clone() for k, v in clf._model.state_dict().items()}
            else:
                self.bad += 1

        def on_epoch_end(self, args, state, control, **kwargs):
            self.score(state.epoch or 0.0, state.global_step)
            if self.bad >= clf.patience:
                control.should_training_stop = True
            return control

        def finish(self, state) -> None:
            """Score weights that changed after the last epoch's score (a step cap), keep the best."""
            if state.global_step != self.scored_step:
                self.score(state.epoch or 0.0, state.global_step)
            if self.bad and self.state is not None:
                clf._model.load_state_dict(self.state)
                log.info("hf: kept the best epoch (selection macro-F1 %.4f)", self.best)

    return BestEpoch()
