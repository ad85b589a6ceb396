"""Template comparisons: several templates (or versions of one) on the same plan, seeds and model, each
measured the same way (acceptance and drop reasons of the filter chain, label fidelity, diversity, tokens,
and the selection macro-F1 of a classifier retrained on real + accepted texts)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from activesynth.agent.config import GenerateConfig
from activesynth.agent.files import write_json
from activesynth.agent.filtering import context_from_run, filter_candidates
from activesynth.agent.llm.usage import UsageMeter
from activesynth.agent.loader import load_dataset
from activesynth.agent.planner import Planner
from activesynth.agent.runs import Run
from activesynth.agent.synthesize import build_backend, plan_round, synthesize
from activesynth.agent.training import fit_with_synthetic, selection_split
from activesynth.evaluators.base import Candidate
from activesynth.evaluators.metrics.classification import classification_metrics
from activesynth.evaluators.metrics.synthetic import distinct_n
from activesynth.prompts import get_template, snapshot

__all__ = ["compare_templates"]

log = logging.getLogger(__name__)


def _filter(run: Run, context, n: int, records: list[dict]) -> tuple[list[dict], Counter]:
    """Accepted records and first-drop reasons (``evaluator/code``) of the run's filter chain."""
    out = filter_candidates(
        [Candidate.from_record(r) for r in records], context, run.config.filter, n, metrics=False
    )
    reasons: Counter = Counter()
    for res in out.outcome.results:
        first = res.first_drop
        if first is not None:
            reasons[f"{first.evaluator}/{first.code}"] += 1
    return [r.accepted_record() for r in out.outcome.accepted], reasons


def _measure(parsed: list[dict], classifier, embedder) -> dict[str, Any]:
    """Label fidelity (share the round's classifier assigns to the intended label) and embedding diversity."""
    row: dict[str, Any] = {"distinct_2": round(distinct_n([r["text"] for r in parsed], 2), 4)}
    row["label_fidelity"] = None
    if parsed:
        proba = classifier.predict_proba([r["text"] for r in parsed])
        pred = [classifier.classes_[i] for i in proba.argmax(axis=1)]
        row["label_fidelity"] = round(
            float(np.mean([p == r["label"] for p, r in zip(pred, parsed, strict=True)])), 4
        )
    row["embedding_diversity"] = None
    if len(parsed) > 1:
        X = embedder.encode([r["text"] for r in parsed])
        k = len(parsed)
        row["embedding_diversity"] = round(float(1 - ((X @ X.T).sum() - k) / (k * (k - 1))), 4)
    return row


def _selection_f1(run: Run, dataset, embedder, accepted: list[dict]) -> float:
    clf = fit_with_synthetic(run.config, dataset, embedder, accepted, 1.0)
    split = selection_split(dataset)
    return round(
        classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)["macro_f1"], 4
    )


def _version(
    run: Run, n: int, plan, tmpl, planner, backend, meter, config, context, dataset
) -> dict[str, Any]:
    """Generate round ``n``'s plan with one template version and measure what it gives."""
    variant = plan.model_copy(deep=True)
    for item in variant.items:
        item.template = str(snapshot(tmpl, run.prompts_dir))
        item.n_samples = planner.samples_for(item)
    if hasattr(backend, "stage"):
        backend.stage = f"compare:{tmpl.ref}"
    before = meter.summary()["totals"]
    out_dir = run.round_dir(n) / "compare" / tmpl.ref
    res = synthesize(variant, backend, n, out_dir, config, meter, run.prompts_dir)
    after = meter.summary()["totals"]
    parsed = [r for r in res.candidates if r["status"] == "parsed"]
    accepted, reasons = _filter(run, context, n, res.candidates)
    row: dict[str, Any] = {
        "template": tmpl.ref,
        "version": tmpl.version,
        "mode": tmpl.mode,
        "prompts": res.record["prompts"],
        "samples": res.record["samples"],
        "candidates": len(res.candidates),
        "parsed": len(parsed),
        "accepted": len(accepted),
        "acceptance_rate": round(len(accepted) / len(res.candidates), 4) if res.candidates else 0.0,
        "drop_reasons": dict(reasons.most_common()),
        "failures": res.failures,
        **{k: after[k] - before[k] for k in ("prompt_tokens", "completion_tokens", "calls", "cache_hits")},
        **_measure(parsed, context.classifier, context.embedder),
    }
    if dataset is not None:
        row["selection_macro_f1"] = _selection_f1(run, dataset, context.embedder, accepted)
    return row


def compare_templates(
    run: Run,
    refs: list[str],
    round_index: int | None = None,
    config: GenerateConfig | None = None,
    retrain: bool = True,
    backend=None,
) -> dict[str, Any]:
    """Run each template of ``refs`` on round ``round_index``'s plan (default: the latest) and measure it.

    Candidates go to ``round-NN/compare/<name@sha12>/``; the summary to ``round-NN/compare/<a>_vs_<b>.json``.
    The caller holds the run's lock.
    """
    config = config or run.config.generate
    n = round_index if round_index is not None else run.latest_round()
    if n is None:
        raise ValueError(f"{run.path}: no rounds yet")
    plan, _, _ = plan_round(run, n, config)
    templates = [get_template(r, [run.prompts_dir]) for r in refs]
    meter = UsageMeter(config.prices)
    owned = backend is None
    backend = backend or build_backend(config, run.llm_cache_path(), meter)
    meter = getattr(backend, "meter", meter)
    backend.check()
    planner = Planner(config.planner_settings())
    context = context_from_run(run, n)
    dataset = load_dataset(run) if retrain else None
    base_f1 = _selection_f1(run, dataset, context.embedder, []) if dataset is not None else None
    rows = []
    try:
        for tmpl in templates:
            rows.append(_version(run, n, plan, tmpl, planner, backend, meter, config, context, dataset))
    finally:
        if owned:
            backend.close()
    summary = {
        "round": n,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": backend.model_id,
        "plan_items": len(plan.items),
        "plan_texts": plan.total_texts,
        "selection_macro_f1_without_synthetic": base_f1,
        "versions": rows,
    }
    out = run.round_dir(n) / "compare" / ("_vs_".join(t.ref for t in templates) + ".json")
    write_json(out, summary)
    summary["path"] = str(out)
    return summary
