"""The active-synthesis loop: the only place that knows the order of the stages.

A round: train the target classifier on real + kept synthetic data → score uncertainty and write the report
→ plan and generate candidates → filter them → retrain with the new accepted texts, choosing the synthetic
sample weight on the selection split → roll the round back if selection macro-F1 fell → evaluate on test.
Every stage writes its artifact before the next starts, and generation goes through the LLM cache, so a
killed run resumes where it stopped without repeating LLM calls. Between stages the loop reads the run's
control messages (pause, stop, approvals, changes for the next round; :mod:`activesynth.agent.control`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from activesynth.agent import control
from activesynth.agent.classifier import check_classifier
from activesynth.agent.config import RunConfig, override
from activesynth.agent.datasets import Dataset
from activesynth.agent.export import export
from activesynth.agent.filtering import filter_run
from activesynth.agent.loader import load_dataset, load_embedder
from activesynth.agent.progress import display_of
from activesynth.agent.report import build_report, write_report
from activesynth.agent.runs import Round, Run
from activesynth.agent.synthesize import generate_round
from activesynth.agent.tracking import start_tracking
from activesynth.agent.training import drop_probability, evaluate, real_only_classifier, select_weight
from activesynth.evaluators.chain import FilterChain

__all__ = ["acceptance_rate", "ask_for", "check_config", "report_round", "run_loop"]

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def check_config(config: RunConfig) -> None:
    """Checks that need more than the config's own schema (the filter chain's evaluator names and
    settings, a custom classifier class); a ``ValueError`` of one line, raised before any folder or model is
    made."""
    FilterChain.from_config(config.filter)
    check_classifier(config.classifier)


# ----------------------------------------------------------------------------------------------------------
# Round 1's report (also the ``report`` command)


def report_round(
    run: Run,
    n: int = 1,
    dataset: Dataset | None = None,
    progress: Say | None = None,
    classifier=None,
    train_seconds: float | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Write round ``n``'s model and uncertainty report (training on real data unless ``classifier``, whose
    training time ``train_seconds`` is recorded in the round's metrics when given).

    The report JSON is written last: it marks the round's report as done for a resumed run."""
    say = progress or _quiet
    cfg = run.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    say("loading data")
    ds = dataset or load_dataset(run)
    embedder = load_embedder(cfg.embed)
    timings["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    if classifier is None:
        say(f"embedding {len(ds.train)} training texts and training the '{cfg.classifier.kind}' classifier")
        classifier = real_only_classifier(cfg, ds, embedder)
    timings["train"] = time.perf_counter() - t if train_seconds is None else train_seconds
    t = time.perf_counter()
    report = build_report(ds, classifier, embedder, cfg.uncertainty, cfg.report, seed=cfg.seed, progress=say)
    timings["report"] = time.perf_counter() - t
    report["timings_s"] = timings
    rnd = run.round(n, create=True)
    say(f"writing report to {rnd.path}")
    classifier.save(rnd.file(Round.MODEL))
    timings["total"] = time.perf_counter() - t0
    if not rnd.has(Round.METRICS):
        flat = {
            k: {m: v for m, v in split.items() if m != "per_class"} for k, split in report["metrics"].items()
        }
        rnd.write_json(Round.METRICS, {"round": n, "timings_s": timings, **flat})
    paths = write_report(report, rnd.path, plots=cfg.report.plots)
    accuracy = report["metrics"]["test"]["accuracy"]
    rounds = [r for r in run.record().get("rounds", []) if r.get("round") != n]
    rounds.append({"round": n, "stage": "report", "test_accuracy": accuracy})
    run.update_record(rounds=sorted(rounds, key=lambda r: r["round"]), state="reported")
    run.log_event("report", f"test accuracy {accuracy:.4f}", n)
    return report, paths


# ----------------------------------------------------------------------------------------------------------
# How many texts to ask for


def acceptance_rate(run: Run, before: int) -> float | None:
    """Accepted texts per text asked for (the plans' ``n_texts``) over this run's rounds before ``before``;
    None when there is none yet."""
    asked = accepted = 0
    for m in range(1, before):
        rnd = run.round(m)
        if rnd.has(Round.FILTER_REPORT) and rnd.has(Round.PLAN):
            asked += int(rnd.read_json(Round.PLAN).get("n_texts") or 0)
            accepted += int(rnd.read_json(Round.FILTER_REPORT).get("n_accepted") or 0)
    return accepted / asked if asked else None


def family_yields(run: Run, before: int) -> dict[str, tuple[int, int]]:
    """(accepted, asked) texts per template family over this run's rounds before ``before`` (asked: the
    plan items' ``n_texts``; accepted: accepted records whose ``plan_item`` is one of the family's items)."""
    out: dict[str, list[int]] = {}
    for m in range(1, before):
        rnd = run.round(m)
        if not (rnd.has(Round.FILTER_REPORT) and rnd.has(Round.PLAN)):
            continue
        family = {}
        for item in rnd.read_json(Round.PLAN).get("items") or []:
            family[item.get("id")] = item.get("family")
            out.setdefault(item.get("family"), [0, 0])[1] += int(item.get("n_texts") or 0)
        for rec in rnd.read_jsonl(Round.ACCEPTED):
            if family.get(rec.get("plan_item")) in out:
                out[family[rec["plan_item"]]][0] += 1
    return {f: (a, n) for f, (a, n) in out.items() if f}


def family_weights(yields: dict[str, tuple[int, int]], floor: float = 0.25) -> dict[str, float]:
    """Each family's smoothed yield, (accepted + 1) / (asked + 2), over the mean of those, kept within
    [``floor``, 1 / ``floor``] so that no family stops being measured."""
    rates = {f: (a + 1) / (n + 2) for f, (a, n) in yields.items()}
    if not rates:
        return {}
    mean = sum(rates.values()) / len(rates)
    return {f: round(min(1 / floor, max(floor, r / mean)), 4) for f, r in sorted(rates.items())}


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


def round_generate_config(run: Run, n: int, ask: int):
    """Round ``n``'s generation settings: ``ask`` texts, the arm's mode, and few-shot draw and sampling seed
    varied by round so that a round never replays the previous one from the cache (deterministic, so a
    resumed run asks the same)."""
    base = run.config.generate
    mode = "untargeted" if run.config.arm == "untargeted" else base.planner.mode
    changes = {
        "generate.planner.n_texts": ask,
        "generate.planner.mode": mode,
        "generate.planner.seed": base.planner.seed + 7919 * (n - 1),
        "generate.sampling.seed": base.sampling.seed + 104729 * (n - 1),
    }
    if base.planner.template_bandit:
        changes["generate.planner.family_weights"] = family_weights(family_yields(run, n))
    return override(run.config, changes).generate


# ----------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _State:
    """What the loop carries from round to round."""

    classifier: object
    real_only: object = None  # round 1's model: its posteriors shape 'soft' / 'confidence' synthetic targets
    kept: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best_selection: float | None = None
    weight: float = 1.0
    stale: int = 0
    tokens: int = 0
    cost: float = 0.0
    stop_reason: str = "max rounds"
    train_seconds: float | None = None  # how long the current model took to train (its round's metrics)


def run_loop(run: Run, progress: Say | None = None, backend=None, dataset: Dataset | None = None) -> dict:
    """Run (or resume) the loop of ``run``'s arm; returns the summary also written to ``summary.json``.
    The caller holds the run's lock."""
    say = progress or _quiet
    check_config(run.config)
    tracker = start_tracking(run)  # no-op unless tracking.mlflow; fails fast (one line) before any work
    ds = dataset or load_dataset(run)
    embedder = load_embedder(run.config.embed)
    t_start = time.perf_counter()
    cfg = run.config
    # Round 1's model: real data only. It is also the real-only baseline of this run.
    t = time.perf_counter()
    real_only = real_only_classifier(cfg, ds, embedder)
    state = _State(real_only, real_only=real_only, train_seconds=time.perf_counter() - t)
    for n in range(1, cfg.loop.rounds + 1):
        say(f"round {n}: starting")  # a worker's progress hook may pause or stop here
        reason = _between_rounds(run)
        if reason is None:
            _report(run, n, ds, embedder, state, tracker, say)
            reason = _nothing_left(run, state)
        if reason is not None:
            state.stop_reason = reason
            break
        _round(run, n, ds, embedder, state, backend, tracker, say)
        if state.stale >= run.config.loop.patience:
            state.stop_reason = "selection macro-F1 plateau"
            break
    return _finish(run, ds, embedder, state, tracker, time.perf_counter() - t_start, say)


def _between_rounds(run: Run) -> str | None:
    """Honour pause and stop, and apply changes queued for the next round; a stop reason or None."""
    if control.should_pause(run):
        run.update_record(state="paused")
        resumed = control.wait_while_paused(run)
        run.update_record(state="running")
        if not resumed:
            return "stopped by the user"
    if control.should_stop(run):
        return "stopped by the user"
    run.config = control.apply_overrides(run)  # changed from chat: applies from this round on
    return None


def _report(run: Run, n: int, ds: Dataset, embedder, state: _State, tracker, say: Say) -> None:
    """Round ``n``'s uncertainty report (unless a resumed run has it), and the real-only baseline."""
    rnd = run.round(n, create=True)
    if not rnd.has(Round.REPORT):
        say(f"round {n}: uncertainty report")
        report_round(run, n, ds, say, classifier=state.classifier, train_seconds=state.train_seconds)
    if n == 1:
        before = evaluate(state.classifier, ds, embedder, False)
        state.best_selection = before["selection"]["macro_f1"]
        state.history.append(
            {
                "round": 0,
                "stage": "real-only",
                "weight": None,
                "accepted_total": 0,
                "seconds": {"train": state.train_seconds},
                **_brief(before),
            }
        )
        tracker.log_round(state.history[-1], rnd)


def _nothing_left(run: Run, state: _State) -> str | None:
    """Why the loop should not start another round (arm, budgets), or None."""
    lc = run.config.loop
    if run.config.arm == "real-only":
        return "real-only arm"
    if lc.budget - len(state.kept) <= 0:
        return "synthetic budget reached"
    if lc.token_budget and state.tokens >= lc.token_budget:
        return "token budget reached"
    if lc.money_budget and state.cost >= lc.money_budget:
        return "money budget reached"
    return None


def _round(run: Run, n: int, ds: Dataset, embedder, state: _State, backend, tracker, say: Say) -> None:
    """Generate, filter, (wait for approval,) retrain and evaluate round ``n``."""
    lc = run.config.loop
    quota = math.ceil((lc.budget - len(state.kept)) / (lc.rounds - n + 1))
    t = time.perf_counter()
    gen = _generate(run, n, quota, backend, say)
    seconds = {"generate": time.perf_counter() - t}
    state.tokens += gen["tokens"]
    state.cost += gen.get("cost") or 0.0
    t = time.perf_counter()
    say(f"round {n}: filtering candidates")
    fres = filter_run(run, n, progress=display_of(say))
    new = _round_robin(run.round(n).read_jsonl(Round.ACCEPTED), quota)
    seconds["filter"] = time.perf_counter() - t
    if lc.approval_gate:
        new = _approval(run, n, new, say)
    t = time.perf_counter()
    say(f"round {n}: retraining with {len(state.kept) + len(new)} synthetic texts (choosing the weight)")
    weight, sel_f1, clf, table = select_weight(
        run.config, ds, embedder, state.kept + new, reference=state.real_only, previous=state.classifier
    )
    seconds["train"] = time.perf_counter() - t
    rolled_back = _keep_or_roll_back(run, n, ds, new, (weight, sel_f1, clf), state, say)
    if not rolled_back:
        state.train_seconds = seconds["train"]
    t = time.perf_counter()
    after = evaluate(state.classifier, ds, embedder, False)
    seconds["evaluate"] = time.perf_counter() - t
    entry = {
        "round": n,
        "stage": "retrained",
        "weight": state.weight,
        "weights_tried": table,
        "rolled_back": rolled_back,
        "candidates": fres.report.get("n_candidates"),
        "accepted": fres.report.get("n_accepted"),
        "used": 0 if rolled_back else len(new),
        "accepted_total": len(state.kept),
        "seconds": seconds,
        "tokens": gen["tokens"],
        **_brief(after),
    }
    state.history.append(entry)
    rnd = run.round(n)
    rnd.write_json(Round.METRICS, {**rnd.read_json(Round.METRICS, {}), "after": after, "entry": entry})
    tracker.log_round(entry, rnd)


def _keep_or_roll_back(
    run: Run, n: int, ds: Dataset, new: list[dict], choice, state: _State, say: Say
) -> bool:
    """Keep the retrained classifier, or roll the round back when its selection macro-F1 fell (with the
    configured confidence); True if rolled back. Updates the plateau counter and writes ``used.json``."""
    weight, sel_f1, clf = choice
    lc = run.config.loop
    best = state.best_selection
    rolled_back = bool(lc.rollback and best is not None and sel_f1 < best)
    if rolled_back and lc.rollback_confidence is not None:
        worse = drop_probability(state.classifier, clf, ds, seed=run.config.seed + n)
        rolled_back = worse >= lc.rollback_confidence
        say(f"round {n}: selection macro-F1 {sel_f1:.4f} vs {best:.4f}; worse in {worse:.0%} of resamples")
    if rolled_back:
        say(f"round {n}: selection macro-F1 fell ({sel_f1:.4f} < {best:.4f}); rolled back")
        for r in new:
            r["rolled_back"] = True
    else:
        state.kept += new
        state.classifier, state.weight = clf, weight
    used = {"used": [r["id"] for r in new], "rolled_back": rolled_back, "weight": weight}
    run.round(n).write_json(Round.USED, used)
    gain = sel_f1 - (best if best is not None else sel_f1)
    state.stale = 0 if not rolled_back and (best is None or gain > lc.min_delta) else state.stale + 1
    if not rolled_back:
        state.best_selection = sel_f1 if best is None or sel_f1 > best else best
    return rolled_back


def _approval(run: Run, n: int, new: list[dict], say: Say) -> list[dict]:
    """Wait for a human decision on round ``n``'s batch; the batch, or nothing when it was rejected."""
    say(f"round {n}: waiting for approval of {len(new)} accepted texts (/approve {n} or /reject {n})")
    while control.is_approved(run, n) is None:
        if control.should_stop(run):
            break
        time.sleep(1.0)
    if control.is_approved(run, n) is True:
        return new
    say(f"round {n}: batch rejected; not trained on")
    for r in new:
        r["rejected_by_user"] = True
    return []


def _generate(run: Run, n: int, quota: int, backend, say: Say) -> dict:
    """Plan and generate round ``n``'s candidates (asking for enough texts to end with ``quota`` accepted)."""
    ask, rate = ask_for(run, n, quota)
    gcfg = round_generate_config(run, n, ask)
    why = f"; acceptance so far {rate:.0%}" if rate is not None else ""
    say(f"round {n}: generating ~{ask} candidate texts ({gcfg.planner.mode}{why})")
    res = generate_round(run, n, config=gcfg, backend=backend, progress=display_of(say))
    totals = (res.usage or {}).get("totals", {})
    return {
        "tokens": int(totals.get("prompt_tokens", 0) + totals.get("completion_tokens", 0)),
        "cost": totals.get("cost"),
        "parsed": res.record.get("parsed"),
        "samples": res.record.get("samples"),
    }


def _finish(run: Run, ds: Dataset, embedder, state: _State, tracker, seconds: float, say: Say) -> dict:
    """Final evaluation on test, export, ``summary.json`` and the run's end state."""
    lc, cfg = run.config.loop, run.config
    say("final evaluation on the held-out test split" + (" (with robustness)" if lc.robustness else ""))
    final = evaluate(
        state.classifier, ds, embedder, lc.robustness, lc.attack_texts, cfg.seed, lc.robustness_texts
    )
    export(run, state.classifier, state.kept, state.history, final)
    summary = {
        "arm": cfg.arm,
        "seed": cfg.seed,
        "stop_reason": state.stop_reason,
        "rounds": state.history,
        "final": final,
        "synthetic_used": len(state.kept),
        "weight": state.weight,
        "tokens": state.tokens,
        "seconds": seconds,
    }
    run.write_summary(summary)
    run.update_record(state="done", stop_reason=state.stop_reason)
    run.log_event("done", f"{state.stop_reason}; test accuracy {final['test']['accuracy']:.4f}")
    tracker.finish(run, summary)
    return summary


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
