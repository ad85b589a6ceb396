"""Bring your own classifier (issue 17): the `hf`, `setfit` and `custom` kinds trained for real on a small
BANKING77 slice with the bundled MiniLM, saved and loaded; MC dropout and temperature; weighted losses; the
one-fit weight choice; warm starts; one loop round each for `hf` and `custom` with a scripted generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from activesynth.agent.classifier import (
    Classifier,
    CustomClassifier,
    FitContext,
    HFClassifier,
    SetFitClassifier,
    build_classifier,
    load_classifier,
    load_custom_class,
)
from activesynth.agent.classifier_hf import weighted_cross_entropy
from activesynth.agent.classifier_setfit import contrastive_pairs
from activesynth.agent.config import ClassifierConfig, DataConfig, RunConfig, override
from activesynth.agent.uncertainty import BALD, MCDropout
from tests.conftest import SMALL_LABELS, banking_slice

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT}/data/examples/sklearn_classifier.py:TfidfLogisticRegression"


def _xy(rows):
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def data():
    """8 intents: 8 training texts each, 4 selection (dev) texts each, 10 test texts each."""
    train, dev, test = (
        banking_slice("train", SMALL_LABELS, 8),
        banking_slice("dev", SMALL_LABELS, 4),
        banking_slice("test", SMALL_LABELS, 10),
    )
    return {"train": _xy(train), "select": _xy(dev), "test": _xy(test)}


def _context(data, **kw) -> FitContext:
    return FitContext(eval_texts=data["select"][0], eval_labels=data["select"][1], **kw)


def _accuracy(clf, data) -> float:
    x, y = data["test"]
    return float(np.mean(np.array(clf.predict(x)) == np.array(y)))


# ----------------------------------------------------------------------------------------------------------
# The schema


def test_classifier_config_kinds_are_strict_and_documented():
    for name, field in ClassifierConfig.model_fields.items():
        assert field.description, name
    cfg = ClassifierConfig()
    assert (cfg.kind, cfg.model, cfg.warm_start, cfg.weight_selection) == (
        "head",
        "all-MiniLM-L6-v2",
        False,
        "proxy",
    )
    assert cfg.contrastive_synthetic is False and cfg.custom is None
    for kind in ("head", "finetune", "hf", "setfit"):
        assert ClassifierConfig(kind=kind).kind == kind
    bad = [
        ({"kind": "custom"}, "needs classifier.custom"),
        ({"custom": "a:B"}, "set kind: custom"),
        ({"kind": "custom", "custom": "no_colon"}, "module:Class"),
        ({"warm_start": True}, "warm_start works with kind 'hf' or 'setfit'"),
        ({"kind": "sklearn"}, "kind"),
        ({"pairs": 1}, "pairs"),
        ({"wrm_start": True}, "wrm_start"),
    ]
    for kw, match in bad:
        with pytest.raises(ValidationError, match=match):
            ClassifierConfig(**kw)
    run = RunConfig(data=DataConfig(dataset="banking77"))
    hf = override(run, {"classifier.kind": "hf", "classifier.warm_start": "true", "classifier.epochs": 2})
    assert (hf.classifier.kind, hf.classifier.warm_start, hf.classifier.epochs) == ("hf", True, 2)
    custom = override(run, {"classifier.kind": "custom", "classifier.custom": EXAMPLE})
    assert custom.classifier.custom == EXAMPLE and "custom: " in custom.to_yaml()


# ----------------------------------------------------------------------------------------------------------
# hf


def test_weighted_cross_entropy_ignores_weight_zero():
    import torch

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    loss = weighted_cross_entropy(logits, labels, torch.tensor([1.5, 0.0, 1.5]))
    loss.backward()
    assert torch.all(logits.grad[1] == 0)  # the weight-0 row adds no gradient
    ce = torch.nn.functional.cross_entropy(logits.detach(), labels, reduction="none")
    assert loss.item() == pytest.approx(float((1.5 * ce[0] + 1.5 * ce[2]) / 3))


@pytest.fixture(scope="module")
def hf_model(data, embedder):
    """The bundled MiniLM fine-tuned for 2 epochs (4 steps) on the 8-intent slice."""
    clf = HFClassifier(embedder, epochs=2, lr=1e-4, head_lr=5e-3, batch_size=32, patience=2, seed=0)
    clf.set_context(_context(data))
    return clf.fit(*data["train"])


def _tiny(data, per_label: int = 4, labels: int = 4):
    """The first ``per_label`` training texts of the first ``labels`` intents (a few steps of training)."""
    keep = set(sorted(SMALL_LABELS)[:labels])
    texts, out = [], []
    for t, lab in zip(*data["train"], strict=True):
        if lab in keep and sum(x == lab for x in out) < per_label:
            texts.append(t)
            out.append(lab)
    return texts, out


@pytest.mark.slow
def test_hf_trains_with_early_stopping_calibrates_and_round_trips(tmp_path, data, embedder, hf_model):
    clf = hf_model
    assert clf.classes_ == sorted(SMALL_LABELS)
    assert 1 <= len(clf.history_) <= 3 and all("selection_macro_f1" in h for h in clf.history_)
    assert clf.temperature_ > 0 and clf.temperature_ != 1.0  # fitted on the selection split
    x, _ = data["test"]
    p = clf.predict_proba(x)
    assert p.shape == (len(x), len(SMALL_LABELS))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert _accuracy(clf, data) > 0.3, _accuracy(clf, data)  # 8 intents: chance is 0.125
    clf.save(tmp_path / "hf")
    meta = json.loads((tmp_path / "hf" / "classifier.json").read_text())
    assert meta["kind"] == "hf" and meta["temperature"] == pytest.approx(clf.temperature_)
    again = load_classifier(tmp_path / "hf", embedder)
    assert isinstance(again, HFClassifier) and again.temperature_ == pytest.approx(clf.temperature_)
    np.testing.assert_allclose(again.predict_proba(x), p, atol=1e-6)
    assert isinstance(again, Classifier)


@pytest.mark.slow
def test_hf_mc_dropout_passes_vary(data, hf_model):
    x = data["test"][0][:16]
    for scope in ("head", "full"):
        mc = MCDropout(samples=4, scope=scope).sample(hf_model, x)
        assert mc.shape == (4, 16, len(SMALL_LABELS))
        np.testing.assert_allclose(mc.sum(axis=-1), 1.0, atol=1e-5)
        assert not np.allclose(mc[0], mc[1]) and BALD().score(mc).max() > 0, scope
    assert hf_model.member_proba(x).shape == (1, 16, len(SMALL_LABELS))
    # sampling leaves the model deterministic afterwards
    np.testing.assert_allclose(hf_model._raw_logits(x), hf_model._raw_logits(x), atol=1e-6)


@pytest.mark.slow
def test_hf_weight_zero_moves_the_model_less_than_weight_one(data, embedder):
    """Extra training copies of a text with a wrong label: weight 1 pulls its prediction toward the wrong
    label, weight 0 does not (same seed, same rows, same batches)."""
    texts, labels = _tiny(data)
    extra = next(t for t, lab in zip(*data["train"], strict=True) if lab == sorted(SMALL_LABELS)[0])
    wrong = sorted(SMALL_LABELS)[1]
    texts, labels = [*texts, extra, extra, extra], [*labels, wrong, wrong, wrong]
    p = {}
    for w in (0.0, 1.0):
        clf = HFClassifier(
            embedder, epochs=3, lr=1e-4, head_lr=1e-2, batch_size=32, temperature=False, seed=0
        )
        weights = np.ones(len(texts))
        weights[-3:] = w
        p[w] = clf.fit(texts, labels, sample_weight=weights).predict_proba([extra])[
            0, clf.classes_.index(wrong)
        ]
    assert p[1.0] > p[0.0] + 0.02, p


@pytest.mark.slow
def test_hf_warm_start_starts_from_the_previous_weights_and_reaches_cold_accuracy(data, embedder, hf_model):
    # with a vanishing learning rate, a warm start predicts what the previous model predicted
    still = HFClassifier(embedder, max_steps=1, lr=1e-12, head_lr=1e-12, batch_size=8, temperature=False)
    still.set_context(FitContext(previous=hf_model))
    still.fit(*data["train"])
    x = data["test"][0]
    np.testing.assert_allclose(still._raw_logits(x), hf_model._raw_logits(x), atol=1e-4)
    # the next round's training from the previous weights (one epoch) stays within noise of the cold start
    warm = HFClassifier(embedder, epochs=1, lr=1e-4, head_lr=5e-3, batch_size=32, seed=1)
    warm.set_context(_context(data, previous=hf_model))
    warm.fit(*data["train"])
    assert _accuracy(warm, data) >= _accuracy(hf_model, data) - 0.1


# ----------------------------------------------------------------------------------------------------------
# setfit


def test_contrastive_pairs_are_seeded_and_balanced():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"]
    pairs = contrastive_pairs(labels, 40, np.random.default_rng(0))
    assert pairs == contrastive_pairs(labels, 40, np.random.default_rng(0))
    assert len(pairs) == 40 and sum(t for _, _, t in pairs) == 20
    for i, j, t in pairs:
        assert i != j and (labels[i] == labels[j]) == (t == 1.0)
    with pytest.raises(ValueError, match="two labels"):
        contrastive_pairs(["a", "a"], 4, np.random.default_rng(0))


@pytest.mark.slow
def test_setfit_tunes_the_body_on_real_pairs_fits_heads_and_round_trips(tmp_path, data, embedder):
    texts, labels = data["train"]
    clf = SetFitClassifier(embedder, pairs=48, batch_size=16, lr=5e-5, n_heads=3, seed=0)
    clf.set_context(FitContext(n_real=len(texts)))
    clf.fit(texts, labels)
    assert clf.contrastive_["steps"] == 3 and clf.contrastive_["pairs"] == 48
    x, _ = data["test"]
    tuned = clf.proxy_features(x[:4])
    assert not np.allclose(tuned, embedder.encode(x[:4]), atol=1e-3)  # the body moved
    assert _accuracy(clf, data) > 0.6, _accuracy(clf, data)
    assert clf.member_proba(x).shape == (3, len(x), len(SMALL_LABELS))
    # synthetic rows (past n_real) neither enter the pairs nor retune the body; their weights reach the heads
    key = clf._tuned_key
    syn = ["please tell me the exchange rate for my card"]
    clf.fit([*texts, *syn], [*labels, "card_arrival"], sample_weight=np.r_[np.ones(len(texts)), 0.0])
    assert clf._tuned_key == key
    clf.save(tmp_path / "sf")
    again = load_classifier(tmp_path / "sf", embedder)
    assert isinstance(again, SetFitClassifier)
    np.testing.assert_allclose(again.predict_proba(x), clf.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(again.member_proba(x), clf.member_proba(x), atol=1e-5)
    with pytest.raises(ValueError, match="dropout"):
        MCDropout(samples=2).sample(clf, x[:2])


# ----------------------------------------------------------------------------------------------------------
# custom


def test_custom_example_trains_with_weights_and_round_trips(tmp_path, data, embedder):
    texts, labels = data["train"]
    clf = build_classifier(ClassifierConfig(kind="custom", custom=EXAMPLE, custom_options={"C": 20}), None)
    assert isinstance(clf, CustomClassifier) and isinstance(clf.inner, Classifier)
    clf.fit(texts, labels)
    x, _ = data["test"]
    p = clf.predict_proba(x)
    assert p.shape == (len(x), 8) and clf.member_proba(x).shape == (1, len(x), 8)
    assert _accuracy(clf, data) > 0.4
    w = np.where(np.array(labels) == SMALL_LABELS[0], 5.0, 1.0)
    k = clf.classes_.index(SMALL_LABELS[0])
    assert clf.fit(texts, labels, sample_weight=w).predict_proba(x)[:, k].mean() > p[:, k].mean()
    clf.save(tmp_path / "c")
    again = load_classifier(tmp_path / "c", embedder)
    assert isinstance(again, CustomClassifier) and again.inner.C == 20
    np.testing.assert_allclose(again.predict_proba(x), clf.predict_proba(x), atol=1e-12)


def _write(tmp_path, source: str) -> str:
    path = tmp_path / "mine.py"
    path.write_text(source)
    return str(path)


def test_custom_class_is_checked_with_one_clear_line(tmp_path):
    no_load = _write(
        tmp_path,
        "class A:\n"
        "    def fit(self, texts, labels, sample_weight=None): return self\n"
        "    def save(self, path): pass\n"
        "class B:\n"
        "    def fit(self, texts, labels): return self\n"
        "    def predict_proba(self, texts): return []\n"
        "    def save(self, path): pass\n"
        "    @classmethod\n"
        "    def load(cls, path): return cls()\n"
        "def f(): pass\n",
    )
    cases = [
        (f"{no_load}:A", "lacks predict_proba, load (a classmethod) (a classifier needs fit(texts, labels"),
        (f"{no_load}:B", "lacks fit's sample_weight argument"),
        (f"{no_load}:f", "is not a class"),
        (f"{no_load}:Nope", "has no class 'Nope'"),
        ("no_such_module_xyz:Thing", "cannot import 'no_such_module_xyz' (ModuleNotFoundError"),
        (f"{tmp_path}/missing.py:A", "no file"),
        ("Thing", "expected 'module:Class'"),
    ]
    for spec, expected in cases:
        with pytest.raises(ValueError, match="^classifier.custom: ") as e:
            load_custom_class(spec)
        assert expected in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))
    assert load_custom_class(EXAMPLE).__name__ == "TfidfLogisticRegression"
    with pytest.raises(ValueError, match=r"LogisticRegression lacks save, load \(a classmethod\)"):
        load_custom_class("sklearn.linear_model:LogisticRegression")  # an estimator, not a text classifier
    with pytest.raises(ValueError, match="custom_options"):
        CustomClassifier(EXAMPLE, {"no_such_option": 1})


def test_check_config_refuses_a_bad_custom_class_before_any_work(tmp_path):
    from activesynth.agent.loop import check_config

    cfg = RunConfig(
        data=DataConfig(dataset="banking77"),
        classifier=ClassifierConfig(kind="custom", custom="no_such_module_xyz:Thing"),
    )
    with pytest.raises(ValueError, match="cannot import"):
        check_config(cfg)


# ----------------------------------------------------------------------------------------------------------
# The weight choice: one fit for slow kinds


class _Probe:
    """A stand-in slow classifier: counts fits and proxy calls; its proxy features are the real embeddings."""

    fits = 0

    def __init__(self, embedder) -> None:
        from activesynth.agent.heads import HeadEnsemble

        self.embedder = embedder
        self.head = HeadEnsemble(embedder, n_heads=1, bootstrap=False)
        self.prepared = 0

    def set_context(self, context) -> None:
        self.context = context

    def prepare(self, texts, labels) -> None:
        self.prepared += 1

    def proxy_features(self, texts):
        return self.embedder.encode(list(texts))

    def fit(self, texts, labels, sample_weight=None):
        type(self).fits += 1
        self.head.fit(texts, labels, sample_weight)
        self.classes_ = self.head.classes_
        self.weights = np.asarray(sample_weight)
        return self

    def predict_proba(self, texts):
        return self.head.predict_proba(texts)


@pytest.mark.parametrize("rule", ["proxy", "each"])
def test_slow_kinds_are_fit_once_per_round(monkeypatch, embedder, small_files, rule):
    from activesynth.agent import training
    from activesynth.agent.datasets import load

    cfg = RunConfig(
        data=DataConfig(**small_files, selection_fraction=0.5),
        classifier=ClassifierConfig(kind="hf", weight_selection=rule),
    )
    ds = load(cfg.data)
    monkeypatch.setattr(training, "build_classifier", lambda c, e: _Probe(embedder))
    _Probe.fits = 0
    extra = banking_slice("train", SMALL_LABELS, 9)[-8:]
    synthetic = [{"text": r["text"], "label": r["label"]} for r in extra]
    weight, f1, clf, table = training.select_weight(cfg, ds, embedder, synthetic)
    assert set(table) == {str(w) for w in cfg.loop.synthetic_weights} and weight in cfg.loop.synthetic_weights
    assert _Probe.fits == (1 if rule == "proxy" else 4)
    assert clf.context.n_real == len(ds.train) and clf.context.eval_texts == list(ds.select.texts)
    if rule == "proxy":
        assert clf.prepared == 1 and f1 == pytest.approx(table[str(weight)])  # the probe's head is the proxy


# ----------------------------------------------------------------------------------------------------------
# One loop round through the real entry point


def _loop_config(small_files, embed_cache, classifier: ClassifierConfig, **extra):
    from activesynth.agent.config import EmbedConfig, LoopConfig, ReportConfig

    return RunConfig(
        data=DataConfig(**small_files, selection_fraction=0.5),
        embed=EmbedConfig(cache_dir=embed_cache),
        report=ReportConfig(n_clusters=3, plots=False),
        loop=LoopConfig(rounds=1, budget=12, robustness=False),
        classifier=classifier,
        **extra,
    )


def _run_one_round(tmp_path, cfg):
    from activesynth.agent.llm.cache import CachedBackend, LLMCache
    from activesynth.agent.loop import run_loop
    from activesynth.agent.runs import Run
    from tests.fakes import EchoBackend

    backend = CachedBackend(EchoBackend(), LLMCache(tmp_path / "llm.sqlite"))
    run = Run.create(tmp_path / "run", cfg)
    summary = run_loop(run, backend=backend)
    entry = summary["rounds"][1]
    assert entry["stage"] == "retrained" and set(entry["weights_tried"]) == {"0.1", "0.3", "0.5", "1.0"}
    metrics = json.loads((run.round_dir(1) / "metrics.json").read_text())
    real_fit = summary["rounds"][0]["seconds"]["train"]  # the real-only model's training time is recorded
    assert real_fit > 0 and metrics["timings_s"]["train"] == pytest.approx(real_fit)
    assert metrics["entry"]["seconds"]["train"] > 0  # weight choice + fit of the round
    return run, summary


@pytest.mark.slow
def test_one_loop_round_with_hf(tmp_path, small_files, embed_cache, embedder):
    from activesynth.agent.config import UncertaintyConfig

    clf = ClassifierConfig(kind="hf", epochs=1, batch_size=16, lr=1e-4, head_lr=5e-3, warm_start=True)
    cfg = _loop_config(
        small_files, embed_cache, clf, uncertainty=UncertaintyConfig(strategy="mc_dropout", mc_samples=3)
    )
    run, summary = _run_one_round(tmp_path, cfg)
    report = json.loads((run.round_dir(1) / "uncertainty_report.json").read_text())
    assert report["classifier"]["kind"] == "hf" and report["strategy"] == "mc_dropout"
    final = load_classifier(run.path / "export" / "model", embedder)
    assert isinstance(final, HFClassifier) and final.temperature_ > 0
    assert 0 <= summary["final"]["test"]["accuracy"] <= 1


@pytest.mark.slow
def test_one_loop_round_with_custom(tmp_path, small_files, embed_cache, embedder):
    run, summary = _run_one_round(
        tmp_path, _loop_config(small_files, embed_cache, ClassifierConfig(kind="custom", custom=EXAMPLE))
    )
    final = load_classifier(run.path / "export" / "model", embedder)
    assert isinstance(final, CustomClassifier)
    assert summary["final"]["test"]["accuracy"] > 0.4
