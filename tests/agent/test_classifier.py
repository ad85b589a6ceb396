import numpy as np
import pytest

from activesynth.agent.classifier import FinetuneClassifier, HeadEnsemble, load_classifier
from activesynth.agent.uncertainty import BALD, MCDropout
from tests.conftest import SMALL_LABELS, banking_slice


@pytest.fixture(scope="module")
def small_data():
    train = banking_slice("train", SMALL_LABELS, 8)
    test = banking_slice("test", SMALL_LABELS, 10)
    return (
        [r["text"] for r in train],
        [r["label"] for r in train],
        [r["text"] for r in test],
        [r["label"] for r in test],
    )


@pytest.mark.parametrize("head", ["logistic", "mlp"])
def test_head_ensemble_learns_and_round_trips(tmp_path, embedder, small_data, head):
    xtr, ytr, xte, yte = small_data
    clf = HeadEnsemble(embedder, n_heads=4, head=head, seed=0).fit(xtr, ytr)
    members = clf.member_proba(xte)
    assert members.shape == (4, len(xte), len(SMALL_LABELS))
    np.testing.assert_allclose(members.sum(axis=-1), 1.0, atol=1e-5)
    acc = np.mean(np.array(clf.predict(xte)) == np.array(yte))
    assert acc > 0.7, acc  # 8 intents, 8 shots each: chance is 0.125
    assert BALD().score(members).max() > 0  # bootstrap heads disagree somewhere
    clf.save(tmp_path / "m")
    again = load_classifier(tmp_path / "m", embedder)
    np.testing.assert_allclose(again.predict_proba(xte), clf.predict_proba(xte), atol=1e-6)


def test_full_prediction_is_the_full_data_head_and_ignores_resampling(tmp_path, embedder, small_data):
    xtr, ytr, xte, _ = small_data
    a = HeadEnsemble(embedder, n_heads=4, seed=0).fit(xtr, ytr)
    b = HeadEnsemble(embedder, n_heads=4, seed=1).fit(xtr, ytr)
    assert not np.allclose(a.member_proba(xte)[1:], b.member_proba(xte)[1:], atol=1e-3)  # members differ
    np.testing.assert_allclose(a.predict_proba(xte), a.member_proba(xte)[0], atol=1e-6)
    np.testing.assert_allclose(a.predict_proba(xte), b.predict_proba(xte), atol=1e-4)  # same point prediction
    ens = HeadEnsemble(embedder, n_heads=4, seed=0, predict="ensemble").fit(xtr, ytr)
    np.testing.assert_allclose(ens.predict_proba(xte), ens.member_proba(xte).mean(axis=0), atol=1e-6)
    ens.save(tmp_path / "e")
    assert load_classifier(tmp_path / "e", embedder).predict_with == "ensemble"
    with pytest.raises(ValueError, match="predict must be"):
        HeadEnsemble(embedder, predict="vote")


def test_logistic_head_matches_sklearn(embedder, small_data):
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, _ = small_data
    ours = HeadEnsemble(embedder, n_heads=1, C=10.0).fit(xtr, ytr)
    ref = LogisticRegression(C=10.0, max_iter=5000, tol=1e-8).fit(embedder.encode(xtr), ytr)
    np.testing.assert_allclose(ours.predict_proba(xte), ref.predict_proba(embedder.encode(xte)), atol=2e-3)


def test_sample_weight_changes_the_fit(embedder, small_data):
    xtr, ytr, xte, _ = small_data
    w = np.where(np.array(ytr) == SMALL_LABELS[0], 5.0, 1.0)
    a = HeadEnsemble(embedder, n_heads=1).fit(xtr, ytr).predict_proba(xte)
    b = HeadEnsemble(embedder, n_heads=1).fit(xtr, ytr, sample_weight=w).predict_proba(xte)
    k = sorted(SMALL_LABELS).index(SMALL_LABELS[0])
    assert b[:, k].mean() > a[:, k].mean()


def test_finetune_trains_saves_and_samples_dropout(tmp_path, embedder, small_data):
    xtr, ytr, xte, yte = small_data
    clf = FinetuneClassifier(embedder, epochs=3, lr=1e-4, batch_size=16, seed=0).fit(xtr[:32], ytr[:32])
    p = clf.predict_proba(xte[:12])
    assert p.shape[0] == 12
    mc = MCDropout(samples=4).sample(clf, xte[:12])
    assert mc.shape == (4, 12, len(clf.classes_))
    assert BALD().score(mc).max() > 0  # dropout on: passes differ
    clf.save(tmp_path / "ft")
    again = load_classifier(tmp_path / "ft", embedder)
    np.testing.assert_allclose(again.predict_proba(xte[:12]), p, atol=1e-5)


def test_mc_dropout_refuses_head_ensemble(embedder, small_data):
    xtr, ytr, xte, _ = small_data
    clf = HeadEnsemble(embedder, n_heads=2).fit(xtr, ytr)
    with pytest.raises(ValueError, match="finetune"):
        MCDropout().sample(clf, xte)
