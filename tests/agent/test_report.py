import json

import numpy as np
import pytest

from activesynth.agent.config import DataConfig, ReportConfig, RunConfig, UncertaintyConfig
from activesynth.agent.datasets import load
from activesynth.agent.loader import load_classifier
from activesynth.agent.loop import report_round
from activesynth.agent.report import choose_k, cluster_texts, keywords
from activesynth.agent.runs import Run


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_files, embed_cache):
    from activesynth.agent.config import EmbedConfig

    cfg = RunConfig(
        data=DataConfig(**small_files, selection_fraction=0),
        embed=EmbedConfig(cache_dir=embed_cache),
        uncertainty=UncertaintyConfig(strategy="entropy", top_fraction=0.5),
        report=ReportConfig(min_clusters=3, max_clusters=6),
    )
    run = Run.create(tmp_path_factory.mktemp("runs") / "r", cfg)
    report, paths = report_round(run, 1)
    return run, report, paths


def test_report_schema_and_files(small_run):
    run, report, paths = small_run
    data = json.loads(paths["json"].read_text())
    assert data["schema_version"] == 1
    for key in ("metrics", "clusters", "per_class", "confused_pairs", "selected", "dataset", "strategy"):
        assert key in data
    for split in ("dev", "test"):
        m = data["metrics"][split]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["ece"] <= 1
        assert set(m["per_class"]) == set(data["dataset"]["labels"])
    assert data["selection"]["n_selected"] == 32  # half of 8 classes x 8 dev texts
    assert 3 <= len(data["clusters"]) <= 6
    assert sum(c["size"] for c in data["clusters"]) == 32
    for c in data["clusters"]:
        assert 1 <= len(c["examples"]) <= 5 and c["keywords"]
        assert c["mean_uncertainty"] > 0
        assert sum(c["predicted_labels"].values()) == c["size"]
    uncertainties = [s["uncertainty"] for s in data["selected"]]
    assert uncertainties == sorted(uncertainties, reverse=True)
    assert paths["md"].read_text().startswith("# Uncertainty report")
    for name in ("per_class_uncertainty.png", "confused_pairs.png", "cluster_map.png"):
        assert (paths["json"].parent / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert (run.round_dir(1) / "model" / "classifier.json").exists()
    assert run.record()["state"] == "reported"


def test_no_test_text_in_any_written_file(small_run, small_files):
    run, _, _ = small_run
    ds = load(DataConfig(**small_files, selection_fraction=0))
    test_texts, _ = ds.test.reveal("evaluation")
    dev_texts = set(ds.dev.texts)
    written = "\n".join(
        p.read_text(encoding="utf-8", errors="ignore")
        for p in run.path.rglob("*")
        if p.suffix in {".json", ".md", ".yaml"}
    )
    assert any(t in written for t in dev_texts)  # the check can see texts at all
    leaked = [t for t in test_texts if t not in dev_texts and t in written]
    assert not leaked


def test_report_matches_independent_metrics(small_run, small_files):
    from sklearn.metrics import accuracy_score, f1_score

    run, report, _ = small_run
    ds = load(DataConfig(**small_files, selection_fraction=0))
    clf = load_classifier(run, 1)  # with the run's own embedder settings
    texts, labels = ds.test.reveal("evaluation")
    pred = clf.predict(texts)
    assert report["metrics"]["test"]["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert report["metrics"]["test"]["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))


def test_faiss_clusters_separate_topics(embedder):
    cards = [
        "Where is my card?",
        "My card has not arrived yet",
        "When will the card be delivered?",
        "How long does card delivery take?",
    ]
    fx = [
        "What is the exchange rate?",
        "Which exchange rate do you use?",
        "Is the currency rate good?",
        "How do you convert euros to dollars?",
    ]
    X = embedder.encode(cards + fx)
    assign, centroids = cluster_texts(X, 2, seed=0)
    assert centroids.shape == (2, 384)
    assert len(set(assign[:4])) == 1 and len(set(assign[4:])) == 1 and assign[0] != assign[4]
    assert "card" in keywords(cards, cards + fx, 3)


def test_choose_k_bounds():
    cfg = ReportConfig(min_clusters=4, max_clusters=40)
    assert choose_k(300, cfg) == 12
    assert choose_k(100000, cfg) == 40
    assert choose_k(10, cfg) == 4
    assert choose_k(5, ReportConfig(n_clusters=3)) == 2
    assert choose_k(1, cfg) == 1


def test_run_refuses_second_process_and_other_config(small_run, tmp_path):
    from activesynth.agent.runs import RunError, RunLocked

    run, _, _ = small_run
    with run.lock(), pytest.raises(RunLocked, match="another process"), Run.open(run.path).lock():
        pass
    other = run.config.model_copy(update={"seed": 5})
    with pytest.raises(RunError, match="different config"):
        Run.create(run.path, other)
    assert Run.create(run.path, run.config).path == run.path


def test_mc_dropout_report(tmp_path, small_files, embed_cache):
    from activesynth.agent.config import ClassifierConfig, EmbedConfig

    cfg = RunConfig(
        data=DataConfig(**small_files, selection_fraction=0),
        embed=EmbedConfig(cache_dir=embed_cache),
        classifier=ClassifierConfig(kind="finetune", epochs=1, batch_size=16),
        uncertainty=UncertaintyConfig(strategy="mc_dropout", mc_samples=3, top_k=16),
        report=ReportConfig(n_clusters=3, plots=False),
    )
    report, _ = report_round(Run.create(tmp_path / "ft", cfg), 1)
    assert report["strategy"] == "mc_dropout" and report["selection"]["n_selected"] == 16
    assert np.isfinite([s["uncertainty"] for s in report["selected"]]).all()
