"""The active-synthesis loop: the only place that knows the order of the stages.

A round: train the target classifier on real + kept synthetic data → score uncertainty and write the report
→ plan and generate candidates → filter them → retrain with the new accepted texts, choosing the synthetic
sample weight on the selection split → roll the round back if selection macro-F1 fell → evaluate on test.
Real data always stays in the mix; synthetic texts carry provenance and are capped per class; weights keep
every class's real prior (no prior shift from feeding a subset of classes).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from activesynth.agent.classifier import build_classifier
from activesynth.agent.config import RunConfig
from activesynth.agent.datasets import Dataset
from activesynth.agent.files import write_json, write_jsonl
from activesynth.agent.report import build_report, write_report
from activesynth.agent.runs import Run
from activesynth.agent.tracking import start_tracking

__all__ = [
    "evaluate",
    "fit_with_synthetic",
    "report_round",
    "run_loop",
    "select_weight",
    "synthetic_weights",
]

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


# ----------------------------------------------------------------------------------------------------------
# Training with synthetic data


def synthetic_weights(
    real_labels: list[str], syn_labels: list[str], weight: float, balance: bool = True
) -> np.ndarray:
    """Sample weights: 1 for real texts, ``weight`` for synthetic ones; with ``balance``, each class's
    total mass is rescaled so the classes keep the real data's prior (total mass unchanged)."""
    w = np.array([1.0] * len(real_labels) + [weight] * len(syn_labels))
    if not balance or not syn_labels:
        return w
    labels = np.array(list(real_labels) + list(syn_labels))
    real = Counter(real_labels)
    n_real = sum(real.values())
    total = w.sum()
    for c, n_c in real.items():
        m = labels == c
        w[m] *= (n_c / n_real) * total / w[m].sum()
    return w


def cap_synthetic(records: list[dict], real_counts: Counter, ratio: float) -> list[dict]:
    """Keep at most ``ratio`` × (real texts of the class) synthetic texts per class, in order."""
    seen: Counter = Counter()
    out = []
    for r in records:
        lab = r["label"]
        if lab in real_counts and seen[lab] < math.floor(ratio * real_counts[lab]):
            seen[lab] += 1
            out.append(r)
    return out


def fit_with_synthetic(run: Run, ds: Dataset, embedder, synthetic: list[dict], weight: float):
    """A fresh classifier on real train + synthetic texts with the loop's weighting."""
    cfg = run.config
    syn = cap_synthetic(synthetic, Counter(ds.train.labels), cfg.loop.max_synthetic_per_real)
    texts = list(ds.train.texts) + [r["text"] for r in syn]
    labels = list(ds.train.labels) + [r["label"] for r in syn]
    w = synthetic_weights(list(ds.train.labels), [r["label"] for r in syn], weight, cfg.loop.balance)
    return build_classifier(cfg.classifier, embedder).fit(texts, labels, sample_weight=w)


def _selection_split(ds: Dataset):
    return ds.select if ds.select is not None else ds.dev


def select_weight(
    run: Run, ds: Dataset, embedder, synthetic: list[dict]
) -> tuple[float, float, object, dict]:
    """Try each configured synthetic weight; return (weight, selection macro-F1, classifier, table)."""
    from activesynth.evaluators.classification import classification_metrics

    split = _selection_split(ds)
    table: dict[str, float] = {}
    best = None
    for w in run.config.loop.synthetic_weights if synthetic else [1.0]:
        clf = fit_with_synthetic(run, ds, embedder, synthetic, w)
        f1 = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)["macro_f1"]
        table[str(w)] = f1
        if best is None or f1 > best[1] + 1e-12:
            best = (w, f1, clf)
    assert best is not None
    return best[0], best[1], best[2], table


# ----------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    clf,
    ds: Dataset,
    embedder,
    robustness: bool = True,
    attack_texts: int = 100,
    seed: int = 0,
    robustness_texts: int | None = 1000,
) -> dict:
    """Test metrics (accuracy, macro P/R/F1, per-class F1, ECE), selection metrics and the dev–test gap,
    and optionally robustness on perturbed copies of (a seeded sample of) the test set and a greedy attack."""
    from activesynth.evaluators.classification import classification_metrics

    split = _selection_split(ds)
    sel = classification_metrics(split.labels, clf.predict_proba(split.texts), clf.classes_)
    texts, labels = ds.test.reveal("evaluation")
    test = classification_metrics(labels, clf.predict_proba(texts), clf.classes_)
    out = {
        "test": test,
        "selection": {k: v for k, v in sel.items() if k != "per_class"},
        "dev_test_gap": sel["accuracy"] - test["accuracy"],
    }
    if robustness and hasattr(clf, "predict_proba_embeddings"):
        from activesynth.evaluators.robustness import robustness_metrics

        plain = embedder.uncached()  # perturbed texts stay out of the disk cache

        def proba_fn(batch):
            return clf.predict_proba_embeddings(plain.encode(list(batch)))

        r_texts, r_labels = texts, labels
        if robustness_texts and len(texts) > robustness_texts:
            pick = np.sort(np.random.default_rng(seed).choice(len(texts), robustness_texts, replace=False))
            r_texts, r_labels = [texts[i] for i in pick], [labels[i] for i in pick]
        out["robustness"] = robustness_metrics(proba_fn, r_texts, r_labels, clf.classes_, seed, attack_texts)
        out["robustness"]["n_texts"] = len(r_texts)
    return out


# ----------------------------------------------------------------------------------------------------------
# Rounds


def report_round(
    run: Run,
    n: int = 1,
    dataset: Dataset | None = None,
    progress: Say | None = None,
    classifier=None,
) -> tuple[dict, dict[str, Path]]:
    """Write round ``n``'s model and uncertainty report (training on real data unless ``classifier``)."""
    say = progress or _quiet
    cfg = run.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    say("loading data")
    ds = dataset or run.load_dataset()
    embedder = run.embedder()
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    if classifier is None:
        say(f"embedding {len(ds.train)} training texts and training the '{cfg.classifier.kind}' classifier")
        classifier = build_classifier(cfg.classifier, embedder).fit(ds.train.texts, ds.train.labels)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    report = build_report(ds, classifier, embedder, cfg.uncertainty, cfg.report, seed=cfg.seed, progress=say)
    timings["report"] = time.perf_counter() - t
    report["timings_s"] = timings

    rdir = run.round_dir(n, create=True)
    say(f"writing report to {rdir}")
    classifier.save(rdir / "model")
    paths = write_report(report, rdir, plots=cfg.report.plots)
    timings["total"] = time.perf_counter() - t0
    if not (rdir / "metrics.json").exists():
        metrics = {"round": n, "timings_s": timings, **{k: _flat(v) for k, v in report["metrics"].items()}}
        write_json(rdir / "metrics.json", metrics)
    rec = run.record()
    rounds = [r for r in rec.get("rounds", []) if r.get("round") != n]
    rounds.append({"round": n, "stage": "report", "test_accuracy": report["metrics"]["test"]["accuracy"]})
    run.update_record(rounds=sorted(rounds, key=lambda r: r["round"]), state="reported")
    run.log_event("report", f"test accuracy {report['metrics']['test']['accuracy']:.4f}", n)
    return report, paths


def _flat(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "per_class"}


def _round_robin(records: list[dict], quota: int) -> list[dict]:
    """Take up to ``quota`` records, one label at a time, so truncation never drops whole classes."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_label[r["label"]].append(r)
    out: list[dict] = []
    queues = [list(v) for _, v in sorted(by_label.items())]
    while len(out) < quota and any(queues):
        for q in queues:
            if q and len(out) < quota:
                out.append(q.pop(0))
    return out


def run_loop(run: Run, progress: Say | None = None, backend=None) -> dict:
    """Run (or resume) the loop of ``run``'s arm; returns the summary also written to ``summary.json``.

    Every stage writes its artifact before the next starts and generation goes through the LLM cache, so a
    killed run resumes where it stopped without repeating LLM calls.
    """
    say = progress or _quiet
    cfg = run.config
    lc = cfg.loop
    tracker = start_tracking(run)  # no-op unless tracking.mlflow; fails fast (one line) before any work
    ds = run.load_dataset()
    embedder = run.embedder()
    t_start = time.perf_counter()
    history: list[dict] = []
    kept: list[dict] = []
    best_sel: float | None = None
    weight = 1.0
    stale = 0
    tokens_used = 0
    cost_used = 0.0
    stop_reason = "max rounds"

    # Round 1's model: real data only. It is also the real-only baseline of this run.
    clf = build_classifier(cfg.classifier, embedder).fit(ds.train.texts, ds.train.labels)
    from activesynth.agent.chat.control import (
        apply_overrides,
        is_approved,
        should_pause,
        should_stop,
        wait_while_paused,
    )

    for n in range(1, lc.rounds + 1):
        say(f"round {n}: starting")  # a chat worker's progress hook may pause or stop here
        if should_pause(run):
            run.update_record(state="paused")
            resumed = wait_while_paused(run)
            run.update_record(state="running")
            if not resumed:
                stop_reason = "stopped by the user"
                break
        if should_stop(run):
            stop_reason = "stopped by the user"
            break
        cfg = apply_overrides(run)  # budget or thresholds changed from chat apply from the next round
        run.config, lc = cfg, cfg.loop
        rdir = run.round_dir(n, create=True)
        if not (rdir / "uncertainty_report.json").exists():
            say(f"round {n}: uncertainty report")
            report_round(run, n, ds, say, classifier=clf)
        if n == 1:
            before = evaluate(clf, ds, embedder, False)
            best_sel = before["selection"]["macro_f1"]
            history.append(
                {"round": 0, "stage": "real-only", "weight": None, "accepted_total": 0, **_brief(before)}
            )
            tracker.log_round(history[-1], rdir)
        if cfg.arm == "real-only":
            stop_reason = "real-only arm"
            break
        remaining = lc.budget - len(kept)
        if remaining <= 0:
            stop_reason = "synthetic budget reached"
            break
        if lc.token_budget and tokens_used >= lc.token_budget:
            stop_reason = "token budget reached"
            break
        if lc.money_budget and cost_used >= lc.money_budget:
            stop_reason = "money budget reached"
            break
        quota = math.ceil(remaining / (lc.rounds - n + 1))

        t = time.perf_counter()
        gen_stats = _generate(run, n, quota, backend, say)
        t_gen = time.perf_counter() - t
        tokens_used += gen_stats.get("tokens", 0)
        cost_used += gen_stats.get("cost") or 0.0

        t = time.perf_counter()
        say(f"round {n}: filtering candidates")
        from activesynth.agent.filtering import filter_run, read_jsonl

        fres = filter_run(run.path, n, config=cfg.filter)
        accepted = [rec for _, rec in read_jsonl(rdir / "accepted.jsonl")]
        new = _round_robin(accepted, quota)
        t_filter = time.perf_counter() - t
        if lc.approval_gate:
            say(f"round {n}: waiting for approval of {len(new)} accepted texts (/approve {n} or /reject {n})")
            while is_approved(run, n) is None:
                if should_stop(run):
                    break
                time.sleep(1.0)
            if is_approved(run, n) is not True:
                say(f"round {n}: batch rejected; not trained on")
                for r in new:
                    r["rejected_by_user"] = True
                new = []

        t = time.perf_counter()
        say(f"round {n}: retraining with {len(kept) + len(new)} synthetic texts (choosing the weight)")
        w, sel_f1, new_clf, table = select_weight(run, ds, embedder, kept + new)
        t_train = time.perf_counter() - t
        rolled_back = bool(lc.rollback and best_sel is not None and sel_f1 < best_sel)
        if rolled_back:
            say(f"round {n}: selection macro-F1 fell ({sel_f1:.4f} < {best_sel:.4f}); rolled back")
            for r in new:
                r["rolled_back"] = True
        else:
            kept += new
            clf, weight = new_clf, w
        write_json(
            rdir / "used.json", {"used": [r["id"] for r in new], "rolled_back": rolled_back, "weight": w}
        )
        gain = sel_f1 - (best_sel if best_sel is not None else sel_f1)
        if not rolled_back and (best_sel is None or gain > lc.min_delta):
            stale = 0
        else:
            stale += 1
        if not rolled_back:
            best_sel = max(best_sel or sel_f1, sel_f1)

        t = time.perf_counter()
        after = evaluate(clf, ds, embedder, False)
        t_eval = time.perf_counter() - t
        entry = {
            "round": n,
            "stage": "retrained",
            "weight": weight,
            "weights_tried": table,
            "rolled_back": rolled_back,
            "candidates": fres.report.get("n_candidates"),
            "accepted": fres.report.get("n_accepted"),
            "used": 0 if rolled_back else len(new),
            "accepted_total": len(kept),
            "seconds": {"generate": t_gen, "filter": t_filter, "train": t_train, "evaluate": t_eval},
            "tokens": gen_stats.get("tokens", 0),
            **_brief(after),
        }
        history.append(entry)
        metrics_path = rdir / "metrics.json"
        base = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        base.update({"after": after, "entry": entry})
        write_json(metrics_path, base)
        tracker.log_round(entry, rdir)
        if stale >= lc.patience:
            stop_reason = "selection macro-F1 plateau"
            break

    say("final evaluation on the held-out test split" + (" (with robustness)" if lc.robustness else ""))
    final = evaluate(clf, ds, embedder, lc.robustness, lc.attack_texts, cfg.seed, lc.robustness_texts)
    export(run, clf, kept, history, final)
    summary = {
        "arm": cfg.arm,
        "seed": cfg.seed,
        "stop_reason": stop_reason,
        "rounds": history,
        "final": final,
        "synthetic_used": len(kept),
        "weight": weight,
        "tokens": tokens_used,
        "seconds": time.perf_counter() - t_start,
    }
    write_json(run.path / "summary.json", summary)
    run.update_record(state="done", stop_reason=stop_reason)
    run.log_event("done", f"{stop_reason}; test accuracy {final['test']['accuracy']:.4f}")
    tracker.finish(run, summary)
    return summary


def export(run: Run, clf, kept: list[dict], history: list[dict], final: dict) -> Path:
    """Write ``export/``: the accepted synthetic data used for training (JSONL, a Hugging Face dataset
    folder, a dataset card) and the final classifier."""
    out = run.path / "export"
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out / "model")
    write_json(out / "synthetic.json", kept)
    write_jsonl(out / "synthetic.jsonl", kept)
    try:
        from datasets import Dataset as HFDataset

        cols = ("text", "label", "round", "template", "template_version", "model", "cluster", "sample_index")
        rows = [{c: (None if r.get(c) is None else str(r.get(c))) for c in cols} for r in kept]
        HFDataset.from_list(rows or [dict.fromkeys(cols, "")]).select(range(len(rows))).save_to_disk(
            str(out / "hf_dataset")
        )
    except Exception as e:  # noqa: BLE001 - the JSONL export above is the primary one
        log.warning("could not write the Hugging Face dataset folder: %s", e)
    cfg = run.config
    by_label = Counter(r["label"] for r in kept)
    templates = Counter(f"{r.get('template')}@{str(r.get('template_version'))[:12]}" for r in kept)
    models = Counter(r.get("model") for r in kept)
    t = final["test"]
    card = [
        f"# Synthetic training data — {cfg.data.dataset or 'user data'} ({cfg.arm})",
        "",
        f"{len(kept)} synthetic texts over {len(by_label)} labels, accepted by the filter chain and used to "
        f"train the final classifier (sample weight {history[-1].get('weight') if history else None}, "
        "class-balanced).",
        "",
        "## Generation",
        "",
        *(f"- model: `{m}` ({n} texts)" for m, n in models.items()),
        *(f"- template: `{k}` ({n} texts)" for k, n in templates.most_common()),
        f"- backend: `{cfg.generate.backend.kind}`; sampling: `{cfg.generate.sampling.model_dump()}`",
        "",
        "## Filters",
        "",
        f"Order: {', '.join(cfg.filter.order)}. Each candidate's decisions: `round-NN/decisions.jsonl`.",
        "",
        "## Counts per label",
        "",
        *(f"- {lab}: {n}" for lab, n in sorted(by_label.items())),
        "",
        "## Final classifier (held-out test split)",
        "",
        f"accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}, ECE {t['ece']:.4f}",
        "",
        "Each record carries its provenance: round, cluster, label pair, template and version, model, "
        "sampling and sample index.",
    ]
    (out / "DATASET_CARD.md").write_text("\n".join(card) + "\n", encoding="utf-8")
    return out


def _brief(ev: dict) -> dict:
    t = ev["test"]
    out = {
        "test_accuracy": t["accuracy"],
        "test_macro_f1": t["macro_f1"],
        "test_ece": t["ece"],
        "selection_macro_f1": ev["selection"]["macro_f1"],
        "dev_test_gap": ev["dev_test_gap"],
    }
    if "robustness" in ev:
        r = ev["robustness"]
        out["robust"] = {k: r[k]["accuracy"] for k in ("typos", "casing", "drop_words")}
        out["robust"]["attack_success"] = r["attack"]["success_rate"]
    return out


def acceptance_rate(run: Run, before: int) -> float | None:
    """Accepted texts per text asked for (the plan's budget) over this run's rounds before ``before``;
    None when there is none yet."""
    asked = acc = 0
    for m in range(1, before):
        rdir = run.round_dir(m)
        if (rdir / "filter_report.json").exists() and (rdir / "generation_plan.json").exists():
            rep = json.loads((rdir / "filter_report.json").read_text(encoding="utf-8"))
            plan = json.loads((rdir / "generation_plan.json").read_text(encoding="utf-8"))
            asked += int(plan.get("budget") or 0)
            acc += int(rep.get("n_accepted") or 0)
    return acc / asked if asked else None


def ask_for(run: Run, n: int, quota: int) -> tuple[int, float | None]:
    """Texts to ask the generator for in round ``n`` to end up with ``quota`` accepted ones.

    Round 1 asks ``overgenerate`` × quota; later rounds divide by the acceptance rate measured so far
    (with a 15 % margin), so a round that fell short is made up for at an equal accepted budget. The factor
    stays between ``overgenerate`` and ``max_overgenerate``; deterministic, so a resumed run asks the same.
    """
    lc = run.config.loop
    rate = acceptance_rate(run, n)
    factor = lc.overgenerate
    if lc.adaptive_overgenerate and rate is not None:
        factor = min(lc.max_overgenerate, max(lc.overgenerate, 1.15 / max(rate, 1e-6)))
    return max(1, math.ceil(quota * factor)), rate


def _generate(run: Run, n: int, quota: int, backend, say: Say) -> dict:
    """Plan and generate round ``n``'s candidates (asking for ``overgenerate`` × quota texts)."""
    from activesynth.agent.synthesize import generate_round, run_generate_config

    mode = "untargeted" if run.config.arm == "untargeted" else run.config.generate.planner.mode
    ask, rate = ask_for(run, n, quota)
    base = run.config.generate
    # A new round must not replay the previous round's prompts and samples from the cache: vary the
    # few-shot draw and the sampling seed by round (deterministic, so a resumed run asks the same).
    gcfg = run_generate_config(
        run,
        {
            "planner": {"budget": ask, "mode": mode, "seed": base.planner.seed + 7919 * (n - 1)},
            "sampling": {"seed": base.sampling.seed + 104729 * (n - 1)},
        },
    )
    why = f"; acceptance so far {rate:.0%}" if rate is not None else ""
    say(f"round {n}: generating ~{ask} candidate texts ({mode}{why})")
    res = generate_round(run, n, config=gcfg, backend=backend)
    usage = res.usage or {}
    totals = usage.get("totals", {})
    tokens = int(totals.get("prompt_tokens", 0) + totals.get("completion_tokens", 0))
    return {
        "tokens": tokens,
        "cost": totals.get("cost"),
        "parsed": res.record.get("parsed"),
        "samples": res.record.get("samples"),
    }


# ----------------------------------------------------------------------------------------------------------
# Arms: real-only, untargeted and active at equal budget, over seeds

ARMS = ("real-only", "untargeted", "active")


def compare_arms(
    out: Path,
    base: RunConfig,
    seeds: list[int],
    arms: tuple[str, ...] = ARMS,
    progress: Say | None = None,
    backend=None,
) -> dict:
    """Run each arm for each seed under ``out/seed-S/ARM`` (same generator, prompts, filters and budget)
    and write ``comparison.json``, ``comparison.md`` and ``comparison.png`` into ``out``."""
    say = progress or _quiet
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = base.generate.cache_path or (out / "llm_cache.sqlite")
    results: dict[str, list[dict]] = {a: [] for a in arms}
    for seed in seeds:
        for arm in arms:
            cfg = base.model_copy(deep=True)
            cfg.seed = seed
            cfg.arm = arm
            cfg.data.seed = seed
            cfg.classifier.seed = seed
            cfg.generate.cache_path = cache
            cfg.generate.planner.seed = seed
            run = Run.create(out / f"seed-{seed}" / arm, cfg)
            say(f"seed {seed}: arm {arm}")
            with run.lock():
                summary_path = run.path / "summary.json"
                if summary_path.exists() and run.record().get("state") == "done":
                    summary = json.loads(summary_path.read_text())
                else:
                    summary = run_loop(run, lambda m, a=arm, s=seed: say(f"[seed {s} {a}] {m}"), backend)
            results[arm].append(summary)
    table = comparison_table(results)
    data = {
        "seeds": seeds,
        "arms": list(arms),
        "table": table,
        "runs": {a: [_short(s) for s in v] for a, v in results.items()},
    }
    write_json(out / "comparison.json", data)
    (out / "comparison.md").write_text(comparison_markdown(table, seeds), encoding="utf-8")
    _plot_rounds(results, out / "comparison.png")
    return data


def _short(summary: dict) -> dict:
    return {
        k: summary[k]
        for k in ("arm", "seed", "stop_reason", "synthetic_used", "weight", "tokens", "seconds", "rounds")
    }


def _mean_sd(values: list[float]) -> dict:
    a = np.array(values, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def comparison_table(results: dict[str, list[dict]]) -> dict:
    """Mean ± sd of final test metrics per arm, and differences to real-only paired by seed."""
    table: dict[str, dict] = {}
    base = {s["seed"]: s for s in results.get("real-only", [])}
    for arm, runs in results.items():
        if not runs:
            continue
        row = {
            "accuracy": _mean_sd([r["final"]["test"]["accuracy"] for r in runs]),
            "macro_f1": _mean_sd([r["final"]["test"]["macro_f1"] for r in runs]),
            "ece": _mean_sd([r["final"]["test"]["ece"] for r in runs]),
            "synthetic_used": _mean_sd([r["synthetic_used"] for r in runs]),
            "tokens": _mean_sd([r["tokens"] for r in runs]),
            "seconds": _mean_sd([r["seconds"] for r in runs]),
        }
        if "robustness" in runs[0]["final"]:
            row["typos_accuracy"] = _mean_sd([r["final"]["robustness"]["typos"]["accuracy"] for r in runs])
            row["attack_success"] = _mean_sd(
                [r["final"]["robustness"]["attack"]["success_rate"] for r in runs]
            )
        if base and arm != "real-only":
            row["delta_accuracy_vs_real"] = _mean_sd(
                [
                    r["final"]["test"]["accuracy"] - base[r["seed"]]["final"]["test"]["accuracy"]
                    for r in runs
                    if r["seed"] in base
                ]
            )
        table[arm] = row
    return table


def comparison_markdown(table: dict, seeds: list[int]) -> str:
    def f(d, scale=100.0, digits=2):
        return f"{d['mean'] * scale:.{digits}f} ± {d['sd'] * scale:.{digits}f}"

    lines = [
        f"Test metrics, mean ± sd over seeds {seeds} (accuracy and F1 in points)",
        "",
        "| arm | accuracy | Δ vs real-only | macro-F1 | ECE | synthetic used | tokens | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, row in table.items():
        delta = f(row["delta_accuracy_vs_real"]) if "delta_accuracy_vs_real" in row else "—"
        lines.append(
            f"| {arm} | {f(row['accuracy'])} | {delta} | {f(row['macro_f1'])} | {f(row['ece'], 1, 3)} "
            f"| {row['synthetic_used']['mean']:.0f} | {row['tokens']['mean']:.0f} "
            f"| {row['seconds']['mean']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_rounds(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    last = max((h["round"] for runs in results.values() for r in runs for h in r["rounds"]), default=0)
    for arm, runs in results.items():
        for r in runs:
            xs = [h["round"] for h in r["rounds"]]
            ys = [h["test_accuracy"] for h in r["rounds"]]
            if arm == "real-only":  # one point: draw it as the baseline across all rounds
                xs, ys = [0, max(last, 1)], [ys[0], ys[0]]
                ax.plot(xs, ys, linestyle="--", alpha=0.8, label=f"{arm} (seed {r['seed']})")
            else:
                ax.plot(xs, ys, marker="o", alpha=0.8, label=f"{arm} (seed {r['seed']})")
    ax.set_xticks(range(0, max(last, 1) + 1))
    ax.set_xlabel("round (0 = real data only)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy per round and arm")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# Data efficiency: how many real labels per class is synthesis worth?


def efficiency(
    out: Path,
    base: RunConfig,
    shots: list[int],
    seeds: list[int],
    progress: Say | None = None,
    backend=None,
) -> dict:
    """Run real-only and active at several shot counts; for each, the real shots per class that real-only
    would need to match active (linear interpolation on the real-only curve) minus the shots used.

    Raises :class:`~agent.datasets.DataError` when a class has fewer training texts than the largest shot
    count (sampling would silently keep them all and the curve would be flat there)."""
    from activesynth.agent.datasets import DataError, load

    say = progress or _quiet
    out = Path(out)
    if shots:
        # Class sizes of the training split do not depend on the seed (stratified split by share).
        full = load(base.data.model_copy(update={"shots": None, "pii_scrub": False, "selection_fraction": 0}))
        counts = Counter(full.train.labels or [])
        need = max(shots)
        short = sorted((n, lab) for lab, n in counts.items() if n < need)
        if short:
            n, lab = short[0]
            raise DataError(
                f"{full.train.source}: {len(short)} class(es) have fewer than {need} training texts "
                f"(smallest: '{lab}' with {n}); the largest shot count must be at most {min(counts.values())}"
            )
    curves: dict[str, dict[int, float]] = {"real-only": {}, "active": {}}
    for k in shots:
        cfg = base.model_copy(deep=True)
        cfg.data.shots = k
        say(f"{k} shots per class")
        data = compare_arms(
            out / f"shots-{k}", cfg, seeds, arms=("real-only", "active"), progress=say, backend=backend
        )
        for arm in curves:
            curves[arm][k] = data["table"][arm]["accuracy"]["mean"]
    xs = sorted(curves["real-only"])
    ys = [curves["real-only"][x] for x in xs]
    worth = {}
    for k in xs:
        acc = curves["active"][k]
        equiv = float(np.interp(acc, ys, xs)) if ys == sorted(ys) else None
        if equiv is not None and acc > ys[-1]:
            equiv = None  # beyond the measured range: not extrapolated
        worth[k] = {
            "active_accuracy": acc,
            "real_only_accuracy": curves["real-only"][k],
            "equivalent_real_shots": equiv,
            "worth_shots": None if equiv is None else equiv - k,
        }
    result = {
        "shots": xs,
        "seeds": seeds,
        "curves": {a: {str(k): v for k, v in c.items()} for a, c in curves.items()},
        "worth": {str(k): v for k, v in worth.items()},
    }
    write_json(out / "efficiency.json", result)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, c in curves.items():
        ax.plot(xs, [c[x] for x in xs], marker="o", label=arm)
    ax.set_xlabel("real examples per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("Data efficiency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "efficiency.png", dpi=110)
    plt.close(fig)
    return result
