"""Seconds per stage of one full loop round, excluding LLM time: cold caches against warm ones.

    python -m benchmarks.bench_stages [--dataset banking77|hwu64] [--seed 0] [--budget 100] [--shots 10]
                                      [--out DIR] [--warm-repeats N] [--robustness] [--profile FILE]
                                      [--threads N] [--verbose]

One real round of active synthesis (``run_loop`` with ``loop.rounds: 1``) on a built-in dataset, 10 shots, the
default run config otherwise (arm ``active``, budget 100; the one exception, after the round: the final
evaluation's robustness pass is off unless ``--robustness``, because it embeds about a thousand perturbed
texts outside the cache on every run and would dominate the benchmark's wall time), with the LLM replaced
by the simulated generator of :mod:`benchmarks.simulate` (ε = 0: it answers every request at once with real
training texts the few-shot sample left out; set up untimed, its oracle on random features so that no
embedding is computed or cached before the cold pass), so no LLM time is spent. Two passes in one process:

- **cold**: a fresh, empty ``$ACTIVESYNTH_CACHE`` (``<out>/cache``): every sentence embedding is computed
  and the embedding model is loaded (part of the cold numbers);
- **warm**: the same cache folder and a new run folder: every embedding and every generation answer comes
  from the product's caches (the LLM cache is shared by both passes through ``generate.cache_path``, as the
  arms of ``activesynth run --compare`` share theirs). Python imports are done by then; a new process would
  pay them again (the ``python imports`` row of the cold pass). ``--warm-repeats N`` runs N warm passes
  (new run folders each) and shows the one with the median total.

Stages (``run_loop`` records only some timings itself, in ``round-01/metrics.json``: ``timings_s`` of
``report_round`` and ``entry.seconds`` of generate / filter / train / evaluate; printed as a cross-check).
The benchmark calls ``load_dataset`` and embeds the real texts itself, passes the dataset to ``run_loop``
and times everything else by wrapping, for the duration of a pass, the public stage functions the loop calls
(names looked up in ``activesynth.agent.loop`` and ``activesynth.agent.synthesize``); a stage's time
excludes the wrapped stages nested in it:

- load data: ``load_dataset(run)``; embed: ``Embedder.encode`` of train, dev, selection, pool and test (the
  loop's embedder settings; cold: with the model load);
- train real-only classifier: ``real_only_classifier``; evaluate real-only baseline: round 1's first
  ``evaluate``;
- uncertainty report: ``build_report`` (scoring, metrics, FAISS clustering); report files: the rest of
  ``report_round`` (markdown, plots, JSON, saving the model, run record);
- plan: ``plan_round`` (reloads the dataset); render prompts: ``render_requests``; generation (simulated,
  shown, excluded from the total): the simulator's ``generate``; LLM cache, parse, write candidates: the
  rest of ``generate_round``;
- filter: ``filter_run`` (rebuilds its context: dataset, embedder, saved model); retrain: ``select_weight``
  and the rollback check's ``drop_probability``; evaluate: the round's ``evaluate``;
- loop bookkeeping: what ``run_loop`` does outside those (config checks, records, events, control);
- after the round, not in the total: the final evaluation (with ``--robustness``: perturbed copies and an
  attack) and the export.

Embedding time (model load + forward passes, ``Embedder._load`` / ``_compute``) is also attributed to the
stage it happens in. The last lines name the three largest warm stages and say whether the issue's goals
(≤ 20 s cold, ≤ 3 s warm, total excluding generation) are met. ``--profile FILE`` writes a cProfile of the
(last) warm pass and prints its top functions.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["STAGES", "Stages", "main", "one_pass", "run_config"]

COLD_GOAL_S = 20.0
WARM_GOAL_S = 3.0

# (key, label, counted in the round's total)
STAGES = [
    ("imports", "python imports (first pass only)", False),
    ("load", "load data", True),
    ("embed", "embed real texts (cold: + model load)", True),
    ("train", "train real-only classifier", True),
    ("baseline", "evaluate real-only baseline", True),
    ("report", "uncertainty report: scoring + FAISS clustering", True),
    ("report_files", "report files: md, plots, json, save model", True),
    ("plan", "plan", True),
    ("render", "render prompts", True),
    ("generation", "generation (simulated; excluded)", False),
    ("candidates", "LLM cache, parse, write candidates", True),
    ("filter", "filter", True),
    ("retrain", "retrain: weight selection + rollback check", True),
    ("evaluate", "evaluate", True),
    ("other", "loop bookkeeping", True),
    ("final", "after the round: final eval (robustness) + export", False),
]
LABELS = {k: label for k, label, _ in STAGES}
COUNTED = [k for k, _, counted in STAGES if counted]


class Stages:
    """Exclusive seconds per stage (a stage's time minus the timed stages nested in it), and the embedding
    work done inside each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.embed_seconds: dict[str, float] = defaultdict(float)
        self.embedded: Counter = Counter()
        self.calls: Counter = Counter()
        self._stack: list[list] = []
        self._embedding = 0
        self.phase = "before"  # before the generation, in the round, or after the round's evaluation

    @property
    def current(self) -> str:
        return self._stack[-1][0] if self._stack else "other"

    @contextlib.contextmanager
    def stage(self, key: str):
        t0 = time.perf_counter()
        self._stack.append([key, 0.0])
        self.calls[key] += 1
        try:
            yield
        finally:
            _, nested = self._stack.pop()
            dt = time.perf_counter() - t0
            self.seconds[key] += dt - nested
            if self._stack:
                self._stack[-1][1] += dt

    def wrap(self, fn: Callable, key: str | Callable[[], str]) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.stage(key() if callable(key) else key):
                return fn(*args, **kwargs)

        return timed

    def wrap_embedding(self, fn: Callable) -> Callable:
        """``Embedder._load`` / ``_compute``: seconds (outermost call only) and texts, by current stage."""

        @functools.wraps(fn)
        def timed(embedder, *args, **kwargs):
            if self._embedding:
                return fn(embedder, *args, **kwargs)
            self._embedding += 1
            t0 = time.perf_counter()
            try:
                return fn(embedder, *args, **kwargs)
            finally:
                self._embedding -= 1
                self.embed_seconds[self.current] += time.perf_counter() - t0
                if fn.__name__ == "_compute" and args:
                    self.embedded[self.current] += len(args[0])

        return timed


@contextlib.contextmanager
def _patched(patches: list[tuple[object, str, Callable]]):
    """Set attributes for the duration of a pass and restore them afterwards (also in a test process)."""
    saved = []
    try:
        for obj, name, new in patches:
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, new)
        yield
    finally:
        for obj, name, old in reversed(saved):
            setattr(obj, name, old)


def _instrument(st: Stages):
    from activesynth.agent import loop, synthesize
    from activesynth.agent.embed import Embedder

    def evaluate_key() -> str:
        if st.phase == "before":
            return "baseline"
        if st.phase == "round":
            st.phase = "after"
            return "evaluate"
        return "final"

    def generation_started(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            st.phase = "round"
            return fn(*args, **kwargs)

        return inner

    return _patched(
        [
            (loop, "real_only_classifier", st.wrap(loop.real_only_classifier, "train")),
            (loop, "report_round", st.wrap(loop.report_round, "report_files")),
            (loop, "build_report", st.wrap(loop.build_report, "report")),
            (loop, "evaluate", st.wrap(loop.evaluate, evaluate_key)),
            (loop, "generate_round", generation_started(st.wrap(loop.generate_round, "candidates"))),
            (synthesize, "plan_round", st.wrap(synthesize.plan_round, "plan")),
            (synthesize, "render_requests", st.wrap(synthesize.render_requests, "render")),
            (loop, "filter_run", st.wrap(loop.filter_run, "filter")),
            (loop, "select_weight", st.wrap(loop.select_weight, "retrain")),
            (loop, "drop_probability", st.wrap(loop.drop_probability, "retrain")),
            (loop, "export", st.wrap(loop.export, "final")),
            (Embedder, "_load", st.wrap_embedding(Embedder._load)),
            (Embedder, "_compute", st.wrap_embedding(Embedder._compute)),
        ]
    )


# ----------------------------------------------------------------------------------------------------------
# The run and the simulator


def run_config(data, budget: int, seed: int, llm_cache: Path, robustness: bool = False):
    """The default run config with one round, ``budget`` accepted texts, seeds as ``compare_arms`` sets them,
    the LLM cache shared by both passes, and the final evaluation's robustness pass as asked."""
    from activesynth.agent.config import LoopConfig, RunConfig

    loop = LoopConfig(budget=budget, rounds=1, robustness=robustness)
    cfg = RunConfig(data=data, loop=loop, seed=seed)
    cfg.classifier.seed = seed
    cfg.generate.planner.seed = seed
    cfg.generate.backend.model = "simulated (benchmarks.simulate)"
    cfg.generate.cache_path = llm_cache
    return cfg


class _RandomFeatures:
    """The simulator oracle's embedder, replaced: the oracle only chooses wrong-label texts, and ε = 0 serves
    none, so the simulator is set up without computing (or caching) a single embedding."""

    model_name = "random-features"

    def encode(self, texts) -> np.ndarray:
        return np.random.default_rng(len(texts)).normal(size=(len(texts), 8)).astype(np.float32)


def simulator_pool(data):
    """The left-out training texts the simulated generator serves (setup; not timed)."""
    from benchmarks.simulate.generator import build_left_out

    return build_left_out(data, _RandomFeatures(), folds=2)


def one_pass(name: str, cfg, path: Path, pool, say: Callable[[str], None]) -> dict:
    """One round in a new run folder; seconds per stage, embedding per stage and the loop's own record."""
    from activesynth.agent.loader import load_dataset, load_embedder
    from activesynth.agent.loop import run_loop
    from activesynth.agent.runs import Round, Run
    from benchmarks.simulate.generator import SimSettings, SimulatedGenerator

    st = Stages()
    run = Run.create(path, cfg)
    sim = SimulatedGenerator(pool, SimSettings(), path / "simulator.jsonl")
    sim.generate = st.wrap(sim.generate, "generation")
    t0 = time.perf_counter()
    with _instrument(st), run.lock():
        with st.stage("load"):
            ds = load_dataset(run)
        with st.stage("embed"):
            emb = load_embedder(cfg.embed)
            test_texts, _ = ds.test.reveal("evaluation")
            texts = [*ds.train.texts, *ds.dev.texts, *test_texts]
            for split in (ds.select, ds.pool):
                texts += list(split.texts) if split is not None else []
            emb.encode(texts)
        with st.stage("other"):
            summary = run_loop(run, say, sim, dataset=ds)
    wall = time.perf_counter() - t0
    metrics = run.round(1).read_json(Round.METRICS, {})
    return {
        "pass": name,
        "seconds": dict(st.seconds),
        "embed_seconds": dict(st.embed_seconds),
        "embedded": dict(st.embedded),
        "calls": dict(st.calls),
        "wall": wall,
        "total": sum(st.seconds.get(k, 0.0) for k in COUNTED),
        "loop_record": {
            "report": metrics.get("timings_s", {}),
            "round": metrics.get("entry", {}).get("seconds"),
        },
        "accepted": (summary.get("rounds") or [{}])[-1].get("accepted"),
        "used": summary.get("synthetic_used"),
        "test_accuracy": summary["final"]["test"]["accuracy"],
    }


# ----------------------------------------------------------------------------------------------------------
# Output


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def table(cold: dict, warm: dict) -> str:
    lines = [
        "| stage | cold s | warm s | embedding in it, cold (texts) | embedding in it, warm (texts) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label, _ in STAGES:
        c, w = cold["seconds"].get(key), warm["seconds"].get(key)
        if c is None and w is None:
            continue

        def emb(p: dict, key: str = key) -> str:
            s = p["embed_seconds"].get(key)
            return "" if not s else f"{s:.2f} ({p['embedded'].get(key, 0)})"

        lines.append(f"| {label} | {_s(c)} | {_s(w)} | {emb(cold)} | {emb(warm)} |")
    lines.append(
        f"| **total excluding generation** | **{cold['total']:.2f}** | **{warm['total']:.2f}** | | |"
    )
    return "\n".join(lines)


def loop_record(p: dict) -> str:
    rep, rnd = p["loop_record"]["report"], p["loop_record"]["round"] or {}
    parts = [f"report_round timings_s: {', '.join(f'{k} {v:.2f}' for k, v in rep.items())}"]
    parts.append(f"round entry seconds: {', '.join(f'{k} {v:.2f}' for k, v in rnd.items())}")
    return f"{p['pass']}: " + "; ".join(parts)


def verdict(cold: dict, warm: dict) -> list[str]:
    imports = cold["seconds"].get("imports", 0.0)
    top = sorted(((warm["seconds"].get(k, 0.0), k) for k in COUNTED), reverse=True)[:3]
    share = ", ".join(f"{LABELS[k]} {s:.2f} s ({s / warm['total']:.0%})" for s, k in top)
    ok = {True: "met", False: "NOT met"}
    return [
        f"warm time goes to: {share}",
        f"cold goal ≤ {COLD_GOAL_S:g} s: {ok[cold['total'] <= COLD_GOAL_S]} ({cold['total']:.2f} s; "
        f"{cold['total'] + imports:.2f} s with the imports)",
        f"warm goal ≤ {WARM_GOAL_S:g} s: {ok[warm['total'] <= WARM_GOAL_S]} ({warm['total']:.2f} s in this "
        f"process; a new process adds about {imports:.1f} s of imports)",
    ]


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "unknown"


# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_stages", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="banking77", help="built-in dataset (banking77, hwu64)")
    ap.add_argument(
        "--train", type=Path, help="training file instead of a built-in dataset (with --dev/--test)"
    )
    ap.add_argument("--dev", type=Path)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=100, help="accepted synthetic texts (loop.budget)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--warm-repeats", type=int, default=1, help="warm passes; the median one is shown")
    ap.add_argument(
        "--robustness",
        action="store_true",
        help="keep the final evaluation's robustness pass (the default config's; after the round, uncached)",
    )
    ap.add_argument(
        "--profile", type=Path, default=None, help="write a cProfile of the (last) warm pass here"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--verbose", action="store_true", help="print the loop's progress lines")
    args = ap.parse_args(argv)
    if args.train and not (args.dev and args.test):
        ap.error("--train needs --dev and --test")
    if args.warm_repeats < 1:
        ap.error("--warm-repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run both passes, print the tables; returns {'cold', 'warm', 'warm_totals', 'load_average'}."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model loads and the export's dataset save
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-stages-"))
    if args.out and out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: not empty; the cold pass needs a fresh cache folder")
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    saved_env = os.environ.get("ACTIVESYNTH_CACHE")
    os.environ["ACTIVESYNTH_CACHE"] = str(cache)
    try:
        return _bench(args, out, cache)
    finally:
        if saved_env is None:
            os.environ.pop("ACTIVESYNTH_CACHE", None)
        else:
            os.environ["ACTIVESYNTH_CACHE"] = saved_env
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


def _bench(args: argparse.Namespace, out: Path, cache: Path) -> dict:
    t = time.perf_counter()
    import torch

    import activesynth.agent.loop  # noqa: F401
    import benchmarks.simulate.generator  # noqa: F401

    imports = time.perf_counter() - t
    if args.threads:
        torch.set_num_threads(args.threads)
    from activesynth.agent.config import DataConfig

    if args.train:
        data = DataConfig(train=args.train, dev=args.dev, test=args.test, shots=args.shots, seed=args.seed)
        name = args.train.name
    else:
        data = DataConfig(dataset=args.dataset, shots=args.shots, seed=args.seed)
        name = args.dataset
    cfg = run_config(data, args.budget, args.seed, out / "llm_cache.sqlite", args.robustness)
    say = (lambda m: print(f"  {m}", flush=True)) if args.verbose else (lambda _m: None)
    t = time.perf_counter()
    pool = simulator_pool(data)
    print(
        f"{name}, {args.shots} shots, budget {args.budget}, seed {args.seed}, robustness "
        f"{'on' if args.robustness else 'off'}; torch threads {torch.get_num_threads()}; simulator set up in "
        f"{time.perf_counter() - t:.1f} s ({len(pool.texts)} left-out texts); cache {cache}",
        flush=True,
    )
    print(f"load average before: {_load_average()}", flush=True)
    cold = one_pass("cold", cfg, out / "run-cold", pool, say)
    cold["seconds"]["imports"] = imports
    print(f"cold pass: {cold['wall']:.1f} s wall; load average {_load_average()}", flush=True)
    warms = []
    profiler = cProfile.Profile() if args.profile else None
    for i in range(args.warm_repeats):
        last = i == args.warm_repeats - 1
        if profiler and last:
            profiler.enable()
        warms.append(one_pass("warm", cfg, out / f"run-warm-{i + 1}", pool, say))
        if profiler and last:
            profiler.disable()
            profiler.dump_stats(args.profile)
        print(
            f"warm pass {i + 1}: {warms[-1]['wall']:.1f} s wall; load average {_load_average()}", flush=True
        )
    totals = [w["total"] for w in warms]
    warm = sorted(warms, key=lambda w: w["total"])[(len(warms) - 1) // 2]
    print()
    print(table(cold, warm))
    if len(warms) > 1:
        listed = ", ".join(f"{x:.2f}" for x in totals)
        print(f"\nwarm totals of the {len(warms)} passes: {listed} s (the median one is shown)")
    print(
        f"\naccepted {cold['accepted']} / {warm['accepted']} candidates, {cold['used']} / {warm['used']} "
        f"used, test accuracy {cold['test_accuracy']:.4f} / {warm['test_accuracy']:.4f} (cold / warm)"
    )
    print("loop's own record (round-01/metrics.json), seconds:")
    for p in (cold, warm):
        print(f"  {loop_record(p)}")
    print()
    for line in verdict(cold, warm):
        print(line)
    print(f"load average after: {_load_average()}")
    if profiler:
        buf = io.StringIO()
        pstats.Stats(str(args.profile), stream=buf).sort_stats("cumulative").print_stats(30)
        print(f"\nlast warm pass profile ({args.profile}), top 30 by cumulative time:\n{buf.getvalue()}")
    sys.stdout.flush()
    return {"cold": cold, "warm": warm, "warm_totals": totals, "load_average": _load_average()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
