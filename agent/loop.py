"""The active-synthesis loop: the only place that knows the order of the stages.

Round 1 so far: train the target classifier on real data, score uncertainty on dev + pool, cluster, write
the uncertainty report. Generation, filtering and retraining plug in after it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from agent.classifier import build_classifier
from agent.datasets import Dataset
from agent.report import build_report, write_report
from agent.runs import Run

__all__ = ["report_round"]

log = logging.getLogger(__name__)


def report_round(
    run: Run, n: int = 1, dataset: Dataset | None = None, progress: Callable[[str], None] | None = None
) -> tuple[dict, dict[str, Path]]:
    """Train on real data, score and cluster uncertainty, write round ``n``'s report and model."""
    say = progress or (lambda _m: None)
    cfg = run.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    say("loading data")
    ds = dataset or run.load_dataset()
    embedder = run.embedder()
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    say(f"embedding {len(ds.train)} training texts and training the '{cfg.classifier.kind}' classifier")
    clf = build_classifier(cfg.classifier, embedder).fit(ds.train.texts, ds.train.labels)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    report = build_report(ds, clf, embedder, cfg.uncertainty, cfg.report, seed=cfg.seed, progress=say)
    report["timings_s"] = timings
    timings["report"] = time.perf_counter() - t

    rdir = run.round_dir(n, create=True)
    say(f"writing report to {rdir}")
    clf.save(rdir / "model")
    paths = write_report(report, rdir, plots=cfg.report.plots)
    timings["total"] = time.perf_counter() - t0
    metrics = {
        "round": n,
        "real_only": True,
        "timings_s": timings,
        **{k: _flat(v) for k, v in report["metrics"].items()},
    }
    (rdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    rec = run.record()
    rounds = [r for r in rec.get("rounds", []) if r.get("round") != n]
    rounds.append({"round": n, "stage": "report", "test_accuracy": report["metrics"]["test"]["accuracy"]})
    run.update_record(rounds=rounds, state="reported")
    run.log_event("report", f"test accuracy {report['metrics']['test']['accuracy']:.4f}", n)
    return report, paths


def _flat(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "per_class"}
