"""How synthetic texts are trained (issue 13, noise-robust training): hard labels unchanged, soft targets as
weighted duplicate rows, label-confidence weights, and their effect on a real classifier head."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from activesynth.agent import training
from activesynth.agent.config import DataConfig, LoopConfig, RunConfig, override
from activesynth.agent.datasets import Split
from activesynth.agent.training import (
    cap_synthetic,
    fit_with_synthetic,
    label_confidence,
    real_only_classifier,
    soft_targets,
    synthetic_rows,
    synthetic_weights,
)
from tests.conftest import SMALL_LABELS, banking_slice

CLASSES = ["a", "b", "c", "d"]


def _config(mode: str = "hard", **loop) -> RunConfig:
    return RunConfig(data=DataConfig(dataset="banking77"), loop=LoopConfig(synthetic_targets=mode, **loop))


class FixedReference:
    """A stand-in real-only classifier with a fixed posterior per text."""

    def __init__(self, proba: dict[str, list[float]]) -> None:
        self.classes_ = CLASSES
        self.proba = proba

    def predict_proba(self, texts):
        return np.array([self.proba[t] for t in texts])


class Recorder:
    """Records what a classifier is fit on (to compare rows and weights exactly)."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def fit(self, texts, labels, sample_weight=None):
        self.seen = {"texts": list(texts), "labels": list(labels), "w": np.asarray(sample_weight)}
        return self


def _recorded(monkeypatch, config, ds, synthetic, weight, reference=None) -> dict:
    rec = Recorder()
    monkeypatch.setattr(training, "build_classifier", lambda cfg, emb: rec)
    fit_with_synthetic(config, ds, None, synthetic, weight, reference)
    return rec.seen


REAL = Split("train", [f"real {i}" for i in range(8)], ["a", "a", "a", "b", "b", "c", "c", "d"])
SYN = [
    {"text": "s0", "label": "a"},
    {"text": "s1", "label": "b"},
    {"text": "s2", "label": "b"},
    {"text": "s3", "label": "c"},
    {"text": "s4", "label": "e"},  # no real text of the class: never trained on
]
POSTERIOR = {
    "s0": [0.7, 0.2, 0.1, 0.0],
    "s1": [0.6, 0.3, 0.05, 0.05],  # looks like 'a', labelled 'b'
    "s2": [0.1, 0.8, 0.06, 0.04],
    "s3": [0.25, 0.25, 0.5, 0.0],
    "s4": [0.25, 0.25, 0.25, 0.25],
}


@pytest.mark.parametrize("balance", [True, False])
def test_hard_trains_the_same_rows_and_weights_as_before(monkeypatch, balance):
    ds = SimpleNamespace(train=REAL)
    cfg = _config("hard", balance=balance)
    seen = _recorded(monkeypatch, cfg, ds, SYN, 0.3)
    # the computation before the option existed, verbatim
    syn = cap_synthetic(SYN, Counter(REAL.labels), cfg.loop.max_synthetic_per_real)
    texts = list(REAL.texts) + [r["text"] for r in syn]
    labels = list(REAL.labels) + [r["label"] for r in syn]
    w = synthetic_weights(list(REAL.labels), [r["label"] for r in syn], 0.3, balance)
    assert seen["texts"] == texts and seen["labels"] == labels
    assert seen["w"].dtype == w.dtype and np.array_equal(seen["w"], w)  # bit for bit
    assert _recorded(monkeypatch, cfg, ds, [], 0.3)["labels"] == list(REAL.labels)


@pytest.mark.parametrize("balance", [True, False])
def test_soft_rows_add_up_to_each_texts_weight(monkeypatch, balance):
    ds = SimpleNamespace(train=REAL)
    ref = FixedReference(POSTERIOR)
    hard = _recorded(monkeypatch, _config("hard", balance=balance), ds, SYN, 0.5)
    soft = _recorded(monkeypatch, _config("soft", balance=balance, soft_rivals=2), ds, SYN, 0.5, ref)
    n = len(REAL)
    assert soft["texts"][:n] == hard["texts"][:n] and np.array_equal(soft["w"][:n], hard["w"][:n])
    per_text = Counter()
    for text, w in zip(soft["texts"][n:], soft["w"][n:], strict=True):
        per_text[text] += w
    hard_w = dict(zip(hard["texts"][n:], hard["w"][n:], strict=True))
    assert set(per_text) == set(hard_w) == {"s0", "s1", "s2", "s3"}
    for text, w in hard_w.items():
        assert per_text[text] == pytest.approx(w)  # a text's rows carry exactly its (balanced) weight
    assert soft["w"].sum() == pytest.approx(hard["w"].sum())
    # s1 (labelled b, looks like a): 0.7 on b, the 0.3 over its 2 likeliest rivals a, c as 0.6 : 0.05
    rows = {lab: w for t, lab, w in zip(soft["texts"], soft["labels"], soft["w"], strict=True) if t == "s1"}
    w1 = hard_w["s1"]
    assert rows == pytest.approx({"b": 0.7 * w1, "a": 0.3 * 0.6 / 0.65 * w1, "c": 0.3 * 0.05 / 0.65 * w1})


def test_soft_targets_spread_alpha_over_the_likeliest_rivals():
    proba = np.array([[0.1, 0.6, 0.3, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5, 0.3, 0.2, 0.0]])
    t = soft_targets(proba, CLASSES, ["a", "b", "a"], alpha=0.2, rivals=2)
    assert dict(t[0]) == pytest.approx({"a": 0.8, "b": 0.2 * 0.6 / 0.9, "c": 0.2 * 0.3 / 0.9})
    assert dict(t[1]) == pytest.approx({"b": 0.8, "a": 0.1, "c": 0.1})  # rivals of probability 0: evenly
    assert dict(t[2]) == pytest.approx({"a": 0.8, "b": 0.3 / 2.5, "c": 0.2 / 2.5})  # not 'a' again
    for pairs in t:
        assert sum(s for _, s in pairs) == pytest.approx(1.0) and pairs[0][1] == pytest.approx(0.8)
    assert soft_targets(proba, CLASSES, ["a", "b", "a"], alpha=0.0, rivals=3) == [
        [("a", 1.0)],
        [("b", 1.0)],
        [("a", 1.0)],
    ]
    rows = synthetic_rows(_config("soft", soft_alpha=0.0).loop, SYN[:4], FixedReference(POSTERIOR))
    assert rows.labels == [r["label"] for r in SYN[:4]] and np.array_equal(rows.share, np.ones(4))


def test_label_confidence_is_the_likelihood_ratio_to_the_top_class(monkeypatch):
    proba = np.array([[0.6, 0.3, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0], [0.2, 0.2, 0.6, 0.0]])
    c = label_confidence(proba, CLASSES, ["a", "b", "d"])
    assert c == pytest.approx([1.0, 0.5, 0.0])
    ds = SimpleNamespace(train=REAL)
    ref = FixedReference(POSTERIOR)
    seen = _recorded(monkeypatch, _config("confidence", balance=False), ds, SYN, 0.5, ref)
    syn_w = dict(zip(seen["texts"][len(REAL) :], seen["w"][len(REAL) :], strict=True))
    assert syn_w == pytest.approx({"s0": 0.5, "s1": 0.5 * 0.3 / 0.6, "s2": 0.5, "s3": 0.5})


def test_a_mode_that_needs_posteriors_refuses_to_run_without_them():
    with pytest.raises(ValueError, match="real-only classifier"):
        synthetic_rows(_config("soft").loop, SYN[:1], None)
    assert synthetic_rows(_config("soft").loop, [], None).labels == []


def test_targets_config_is_strict_and_documented():
    lc = LoopConfig()
    assert (lc.synthetic_targets, lc.soft_alpha, lc.soft_rivals) == ("hard", 0.3, 3)
    for bad in (
        {"synthetic_targets": "smooth"},
        {"soft_alpha": 1.0},
        {"soft_alpha": -0.1},
        {"soft_rivals": 0},
        {"synthetic_target": "soft"},  # a misspelt name is an error, not a silent default
    ):
        with pytest.raises(ValidationError):
            LoopConfig(**bad)
    for name in ("synthetic_targets", "soft_alpha", "soft_rivals"):
        assert LoopConfig.model_fields[name].description, name
    cfg = override(RunConfig(data=DataConfig(dataset="banking77")), {"loop.synthetic_targets": "confidence"})
    assert cfg.loop.synthetic_targets == "confidence"


# ----------------------------------------------------------------------------------------------------------
# The check, on real BANKING77 texts and the real classifier head

PAIRS = [  # (true class of the added text, a confusable sibling it is wrongly labelled as)
    ("top_up_failed", "top_up_reverted"),
    ("card_arrival", "card_delivery_estimate"),
    ("transfer_timing", "pending_transfer"),
    ("top_up_reverted", "top_up_failed"),
    ("pending_transfer", "transfer_timing"),
]


def _influence(embedder, mode: str) -> dict[str, np.ndarray]:
    """Per pair, how far one added synthetic text (a real training text of the true class, outside the
    fixture) moves the classifier on held test texts, labelled rightly and wrongly: ``move`` = mean total
    change of the class probabilities; ``toward`` = change of p(true class) on the true class's texts."""
    train = banking_slice("train", SMALL_LABELS, 6)
    extra = [r for r in banking_slice("train", SMALL_LABELS, 8) if r not in train]
    held = banking_slice("test", SMALL_LABELS, 10)
    ds = SimpleNamespace(train=Split("train", [r["text"] for r in train], [r["label"] for r in train]))
    texts = [r["text"] for r in held]
    cfg = _config(mode)
    base = real_only_classifier(cfg, ds, embedder)
    p0 = base.predict_proba(texts)
    out: dict[str, list] = {"move_right": [], "move_wrong": [], "toward_right": [], "toward_wrong": []}
    for true, wrong in PAIRS:
        text = next(r["text"] for r in extra if r["label"] == true)
        mine = np.array([r["label"] == true for r in held])
        for kind, label in (("right", true), ("wrong", wrong)):
            clf = fit_with_synthetic(cfg, ds, embedder, [{"text": text, "label": label}], 1.0, base)
            delta = clf.predict_proba(texts) - p0
            out[f"move_{kind}"].append(np.abs(delta).sum(axis=1).mean())
            out[f"toward_{kind}"].append(delta[mine][:, base.classes_.index(true)].mean())
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def influence(embedder):
    return {mode: _influence(embedder, mode) for mode in ("hard", "soft", "confidence")}


def test_with_hard_labels_a_wrong_label_moves_the_decision_more_than_a_right_one(influence):
    hard = influence["hard"]
    assert np.all(hard["toward_right"] > 0) and np.all(hard["toward_wrong"] < 0)  # the measure's direction
    assert hard["move_wrong"].mean() > 1.5 * hard["move_right"].mean()


@pytest.mark.parametrize("mode", ["soft", "confidence"])
def test_a_wrong_labelled_text_moves_the_decision_less_than_with_hard_labels(influence, mode):
    hard, robust = influence["hard"], influence[mode]
    damage, hard_damage = -robust["toward_wrong"], -influence["hard"]["toward_wrong"]
    assert np.all(damage < hard_damage) and damage.mean() < 0.75 * hard_damage.mean()
    assert np.all(robust["move_wrong"] < hard["move_wrong"])
    ratio = robust["move_wrong"].mean() / robust["move_right"].mean()
    assert ratio < 0.9 * hard["move_wrong"].mean() / hard["move_right"].mean()


def test_with_label_confidence_a_wrong_label_moves_the_decision_no_more_than_a_right_one(influence):
    conf, hard = influence["confidence"], influence["hard"]
    # a right label the real-only head already predicts keeps its full weight: the same model as hard
    assert np.allclose(conf["move_right"], hard["move_right"])
    assert np.allclose(conf["toward_right"], hard["toward_right"])
    assert conf["move_wrong"].mean() < conf["move_right"].mean()
