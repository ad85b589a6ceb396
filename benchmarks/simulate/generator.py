"""The simulated generator: real left-out training texts with a controlled share of wrong labels.

:func:`build_left_out` gathers, for one run's :class:`~activesynth.agent.config.DataConfig`, the real training
texts the few-shot sample left out (the full train split minus the few-shot texts, minus anything equal to a
dev, selection, pool or test text after the quality filter's normalisation), fits the *oracle* (the head of
:func:`benchmarks.synthetic_value.oracle_head`) on them with cross-fitting, so every left-out text gets an
out-of-fold probability vector, and names each label's most confusable *rivals* (largest symmetric
out-of-fold confusion mass between the two classes).

:class:`SimulatedGenerator` is a backend (``agent/llm/protocol.py``): for every requested text of a label it
serves, without replacement across the run where the pool allows,

- with probability ``low_info``: a near-copy of one of the prompt's few-shot examples (a word dropped, two
  words swapped, or the casing changed) -- a low-information text with the right label;
- otherwise a real left-out text: of the requested label with probability 1 - ``eps``; with probability
  ``eps`` a text of one of the label's rivals (chosen at random), returned as the requested label. Which
  rival text: ``random`` (any), ``boundary`` (the one the oracle finds most like the requested label) or
  ``prototype`` (the one the oracle finds most typical of the rival).

So among served real texts the wrong-label share is ``eps``; over all served texts it is
``eps * (1 - low_info)``. Answers are written in the format the template's parser reads (a list
continuation, one rewrite line, or a numbered chat reply), so parsing, provenance and filters run unchanged.
Every served text is logged (``log_path``, JSONL: requested and true label, kind) so a run can measure the
label fidelity of what its filters accepted; a resumed run reads that log back and serves nothing twice.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from activesynth.agent.llm.protocol import GenerationRequest, OnResult, Result

__all__ = [
    "SIM_VERSION",
    "LeftOut",
    "SimSettings",
    "SimulatedGenerator",
    "build_left_out",
    "format_answer",
    "near_copy",
]

log = logging.getLogger(__name__)

SIM_VERSION = 1  # part of every model_id: a change to what the simulator serves never reuses cached answers


class SimSettings(BaseModel):
    """What the simulated generator does (every field enters its ``model_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: float = Field(0.0, ge=0, le=1, description="Share of served real texts that carry a wrong label.")
    noise: Literal["none", "random", "boundary", "prototype"] = Field(
        "random",
        description="Which rival text a wrong one is: any (random), the one most like the requested label "
        "(boundary) or the rival's most typical one (prototype); 'none' only with eps 0.",
    )
    low_info: float = Field(
        0.0, ge=0, le=1, description="Share of answers that are near-copies of the prompt's examples."
    )
    rivals: int = Field(3, ge=1, description="How many most confusable classes wrong texts come from.")
    seed: int = Field(0, description="Seed of every draw.")

    def effective(self) -> SimSettings:
        """With eps 0 the noise model does nothing: every such setting is the same generator."""
        return self.model_copy(update={"noise": "none"}) if self.eps == 0 else self

    def key(self) -> str:
        """A short folder name: ``eps0``, ``eps0.15-prototype``, plus ``-low0.2`` / ``-r5`` / ``-s1``."""
        s = self.effective()
        out = f"eps{s.eps:g}" + ("" if s.noise == "none" else f"-{s.noise}")
        if s.low_info:
            out += f"-low{s.low_info:g}"
        if s.rivals != 3:
            out += f"-r{s.rivals}"
        if s.seed:
            out += f"-s{s.seed}"
        return out


def _norm(text: str) -> str:
    from activesynth.evaluators.quality import normalize

    return normalize(text)


@dataclass
class LeftOut:
    """Real training texts a run's few-shot sample left out, with oracle probabilities and rivals."""

    dataset: str
    data_seed: int
    shots: int | None
    texts: list[str]
    labels: list[str]
    classes: list[str]
    proba: np.ndarray  # (n, len(classes)) out-of-fold oracle probabilities
    rivals: dict[str, list[str]]
    held: frozenset[str] = field(repr=False, default=frozenset())  # normalised texts never to serve
    by_label: dict[str, np.ndarray] = field(init=False, repr=False)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        labs = np.array(self.labels)
        self.by_label = {c: np.flatnonzero(labs == c) for c in self.classes}
        self.index = {_norm(t): i for i, t in enumerate(self.texts)}

    def col(self, label: str) -> int:
        return self.classes.index(label)


def build_left_out(data_cfg, embedder, folds: int = 5, n_rivals: int = 8) -> LeftOut:
    """The left-out pool of ``data_cfg``'s run (see the module docstring); ``n_rivals`` are kept per label."""
    from activesynth.agent.datasets import load

    ds = load(data_cfg)
    full = load(data_cfg.model_copy(update={"shots": None}))
    test_texts, _ = ds.test.reveal("leakage_guard")
    held = set()
    for split in (ds.train, ds.dev, ds.select, ds.pool):
        if split is not None:
            held.update(_norm(t) for t in split.texts)
    held.update(_norm(t) for t in test_texts)
    first: dict[str, tuple[str, str]] = {}
    clash: set[str] = set()
    for t, lab in zip(full.train.texts, full.train.labels or [], strict=True):
        k = _norm(t)
        if not k or k in held:
            continue
        if k in first and first[k][1] != lab:
            clash.add(k)  # one text with two labels: its true label is unknown, never serve it
        first.setdefault(k, (t, lab))
    kept = [v for k, v in first.items() if k not in clash]
    texts = [t for t, _ in kept]
    labels = [lab for _, lab in kept]
    classes = sorted(set(labels))
    proba = _out_of_fold(embedder, texts, labels, classes, folds, data_cfg.seed)
    rivals = _rivals(proba, labels, classes, n_rivals)
    log.info(
        "%s seed %d: %d left-out training texts over %d classes",
        data_cfg.dataset,
        data_cfg.seed,
        len(texts),
        len(classes),
    )
    return LeftOut(
        dataset=str(data_cfg.dataset or ds.name),
        data_seed=data_cfg.seed,
        shots=data_cfg.shots,
        texts=texts,
        labels=labels,
        classes=classes,
        proba=proba,
        rivals=rivals,
        held=frozenset(held),
    )


def _out_of_fold(embedder, texts, labels, classes, folds: int, seed: int) -> np.ndarray:
    """Each text's oracle probabilities from a head fit on the other folds (stratified, seeded)."""
    from benchmarks.synthetic_value import oracle_head

    rng = np.random.default_rng(seed)
    labs = np.array(labels)
    fold = np.zeros(len(texts), dtype=int)
    for c in classes:
        idx = np.flatnonzero(labs == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    proba = np.zeros((len(texts), len(classes)), dtype=np.float32)
    col = {c: j for j, c in enumerate(classes)}
    X = embedder.encode(texts)
    for f in range(folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if not len(te):
            continue
        head = oracle_head(embedder, X[tr], labs[tr].tolist())
        p = head.predict_proba_embeddings(X[te])
        cols = [col[c] for c in head.classes_]
        proba[np.ix_(te, cols)] = p
    return proba


def _rivals(proba: np.ndarray, labels: list[str], classes: list[str], k: int) -> dict[str, list[str]]:
    """Per label, the classes with the most symmetric out-of-fold confusion mass (ties: class order)."""
    labs = np.array(labels)
    conf = np.zeros((len(classes), len(classes)))
    for j, c in enumerate(classes):
        m = labs == c
        if m.any():
            conf[j] = proba[m].mean(axis=0)
    sym = conf + conf.T
    np.fill_diagonal(sym, -np.inf)
    out = {}
    for j, c in enumerate(classes):
        order = np.argsort(-sym[j], kind="stable")[: min(k, len(classes) - 1)]
        out[c] = [classes[i] for i in order]
    return out


# ----------------------------------------------------------------------------------------------------------
# Low-information texts and answer formats


def near_copy(text: str, rng: random.Random) -> str:
    """A light edit of ``text`` (a word dropped, two neighbours swapped, or the casing changed), never
    equal to it."""
    words = text.split()
    ops = ["case"]
    if len(words) >= 4:
        ops.append("drop")
    if len(words) >= 3:
        ops.append("swap")
    op = rng.choice(ops)
    if op == "drop":
        i = rng.randrange(len(words))
        out = " ".join(words[:i] + words[i + 1 :])
    elif op == "swap":
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
        out = " ".join(words)
    else:
        out = text.lower() if text != text.lower() else text[:1].upper() + text[1:]
    if out == text:
        out = text + " please" if not text.endswith("please") else text[:-7]
    return out


def format_answer(texts: list[str], style: str, first_number: int = 1) -> str:
    """Write texts the way a well-behaved model answers a template of ``style``.

    ``list``: the prompt ends in an open item (``9.``), so the first text continues it and the others are
    numbered from ``first_number + 1``; ``rewrite``: one line after ``Rewritten:``; ``chat``: a numbered
    reply."""
    texts = [" ".join(t.split()) for t in texts]
    if style == "rewrite":
        return f" {texts[0]}\n" if texts else ""
    if style == "list":
        head = [f" {texts[0]}"] if texts else []
        return "\n".join(head + [f"{first_number + j}. {t}" for j, t in enumerate(texts[1:], 1)]) + "\n"
    return "\n".join(f"{j}. {t}" for j, t in enumerate(texts, 1))


# ----------------------------------------------------------------------------------------------------------
# The backend


class SimulatedGenerator:
    """A backend that serves real left-out texts with a controlled label-noise rate (module docstring).

    Requests must carry ``meta`` (``render_requests`` fills it: label, rewrite flag, texts per sample, the
    few-shot examples shown). ``log_path``: JSONL of every served text; read back on construction, so a
    resumed run never serves a text twice.
    """

    name = "simulated"

    def __init__(self, pool: LeftOut, settings: SimSettings, log_path: str | Path | None = None) -> None:
        if settings.eps > 0 and settings.noise == "none":
            raise ValueError("noise 'none' needs eps 0; choose random, boundary or prototype")
        self.pool = pool
        self.settings = settings.effective()
        s = self.settings
        self.model_id = (
            f"simulated-v{SIM_VERSION}:{pool.dataset}:shots{pool.shots}:data-seed{pool.data_seed}:"
            f"eps{s.eps:g}:{s.noise}:low{s.low_info:g}:rivals{s.rivals}:seed{s.seed}"
        )
        self.log_path = Path(log_path) if log_path else None
        self.log: list[dict] = []
        self.reused = 0
        self._served = np.zeros(len(pool.texts), dtype=bool)
        rng = np.random.default_rng([s.seed, pool.data_seed, 7])
        self._order = {c: rng.permutation(ix) for c, ix in pool.by_label.items()}
        self._ranked: dict[tuple[str, str], np.ndarray] = {}
        if self.log_path and self.log_path.exists():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.log.append(rec)
                    if rec.get("index") is not None:
                        self._served[rec["index"]] = True

    # -- protocol --------------------------------------------------------------------------------
    def check(self) -> None:
        return None

    def close(self) -> None:
        return None

    def generate(self, requests: list[GenerationRequest], on_result: OnResult | None = None) -> list[Result]:
        out = []
        new: list[dict] = []
        for req in requests:
            meta = dict(req.meta)
            if "label" not in meta:
                raise ValueError(f"request {req.id} carries no label in meta; render it with render_requests")
            label = meta["label"]
            examples = json.loads(meta.get("examples") or "[]")
            # the parser's styles: a chat reply lists texts (a chat rewrite asks for n versions too)
            style = "chat" if req.mode == "chat" else ("rewrite" if meta.get("rewrite") == "1" else "list")
            k = 1 if style == "rewrite" else max(1, int(meta.get("n") or 1))
            prompt = req.prompt or "\n".join(c for _, c in req.messages or ())
            for i in req.sample_indices():
                rng = random.Random(f"{self.settings.seed}:{req.id}:{i}")
                texts = []
                for j in range(k):
                    rec = self._draw(label, examples, rng)
                    rec.update(request=req.id, sample=i, slot=j, item=meta.get("item"), label=label)
                    texts.append(rec["text"])
                    new.append(rec)
                raw = format_answer(texts, style, len(examples) + 1)
                res = Result(
                    request_id=req.id,
                    sample_index=i,
                    text=raw,
                    finish_reason="stop",
                    prompt_tokens=len(prompt.split()),
                    completion_tokens=len(raw.split()),
                )
                out.append(res)
                if on_result:
                    on_result(req, res)
        self.log.extend(new)
        if self.log_path and new:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
        return out

    # -- draws -----------------------------------------------------------------------------------
    def _draw(self, label: str, examples: list[str], rng: random.Random) -> dict:
        s = self.settings
        pool = self.pool
        if examples and (rng.random() < s.low_info or label not in pool.by_label):
            return {"text": near_copy(rng.choice(examples), rng), "true_label": label, "kind": "low_info"}
        if label not in pool.by_label:
            raise ValueError(f"label {label!r} has no left-out text and the prompt shows no example")
        rivals = [r for r in pool.rivals.get(label, [])[: s.rivals] if len(pool.by_label.get(r, ()))]
        if s.eps > 0 and rivals and rng.random() < s.eps:
            rival = rng.choice(rivals)
            idx = self._pick_rival(label, rival, rivals, rng)
            kind = "noise"
        else:
            idx = self._next(self._order[label], rng)
            kind = "clean"
        self._served[idx] = True
        return {"text": pool.texts[idx], "true_label": pool.labels[idx], "kind": kind, "index": int(idx)}

    def _next(self, order: np.ndarray, rng: random.Random) -> int:
        """The first unserved index in ``order``; once all are served, a random one (counted as reused)."""
        free = order[~self._served[order]]
        if len(free):
            return int(free[0])
        self.reused += 1
        return int(order[rng.randrange(len(order))])

    def _pick_rival(self, label: str, rival: str, rivals: list[str], rng: random.Random) -> int:
        """A text of ``rival`` by the noise model (another rival if this one is used up)."""
        for r in [rival] + [x for x in rivals if x != rival]:
            order = self._rival_order(label, r)
            free = order[~self._served[order]]
            if len(free):
                return int(free[0])
        self.reused += 1
        order = self._rival_order(label, rival)
        return int(order[0] if self.settings.noise != "random" else order[rng.randrange(len(order))])

    def _rival_order(self, label: str, rival: str) -> np.ndarray:
        key = (label, rival)
        if key not in self._ranked:
            ix = self.pool.by_label[rival]
            noise = self.settings.noise
            if noise == "boundary":  # most like the requested label first
                score = self.pool.proba[ix, self.pool.col(label)]
            elif noise == "prototype":  # most typical of the rival first
                score = self.pool.proba[ix, self.pool.col(rival)]
            else:
                score = None
            if score is None:
                self._ranked[key] = self._order[rival]
            else:
                self._ranked[key] = ix[np.argsort(-score, kind="stable")]
        return self._ranked[key]

    def mark_served(self, texts: Iterable[str]) -> int:
        """Mark pool texts as served (e.g. candidates of an earlier, unlogged run); returns how many."""
        n = 0
        for t in texts:
            i = self.pool.index.get(_norm(t))
            if i is not None and not self._served[i]:
                self._served[i] = True
                n += 1
        return n
