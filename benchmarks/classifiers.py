"""Classifier kinds: real-only vs active synthesis for the `head`, `hf` (MiniLM fine-tuned with Trainer) and
`setfit` target classifiers, with the embedded generator, at equal accepted budget.

Each (dataset, kind) is one arm comparison (``compare_arms`` with the arms real-only and active) under
``<out>/<dataset>/<kind>``, driven like :mod:`benchmarks.effectiveness` (same options and run config; one LLM
cache per dataset shared by the kinds). The table (``--results``, default
``benchmarks/results/classifiers.md``) gives test accuracy, the paired Δ of active synthesis over real-only,
and seconds: the real-only fit, and per active round its training (weight choice + fit) and its whole time.
Full settings take many hours on 2 cores (`hf` fine-tunes MiniLM end to end); the smallest useful run:

    python -m benchmarks.classifiers --datasets rotten_tomatoes --seeds 0 --kinds head,hf --budget 20 \
        --rounds 1 --set loop.robustness=false --set classifier.epochs=3
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.effectiveness import SHOTS, add_run_options, base_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("head", "hf", "setfit")
ARMS = ("real-only", "active")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="banking77,rotten_tomatoes")
    ap.add_argument("--kinds", default=",".join(KINDS), help="classifier kinds, comma-separated")
    add_run_options(ap, budget=100)
    ap.add_argument("--out", default="runs/classifiers")
    ap.add_argument("--results", default="benchmarks/results/classifiers.md")
    ap.add_argument("--from-runs", action="store_true", help="run nothing: rebuild the table from --out")
    args = ap.parse_args(argv)

    from activesynth.agent.config import parse_assignment
    from activesynth.agent.experiments.arms import compare_arms

    changes = dict(parse_assignment(x) for x in args.set)
    if args.shots:
        SHOTS.update(dict.fromkeys(SHOTS, args.shots))
    seeds = [int(s) for s in args.seeds.split(",")]
    names, kinds = args.datasets.split(","), args.kinds.split(",")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        ap.error(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    rows: dict[tuple[str, str], str] = {}
    if args.from_runs:
        for name in names:
            for kind in kinds:
                path = Path(args.out) / name / kind / "comparison.json"
                if path.exists():
                    data = json.loads(path.read_text())
                    rows[name, kind] = _row(name, kind, data["seeds"], data)
        _write(_header(args, changes) + list(rows.values()), args)
        return
    # seed-major, as in benchmarks.effectiveness: a cut-short run still covers every dataset and kind
    for k in range(len(seeds)):
        for name in names:
            for kind in kinds:
                cfg = base_config(name, args, {**changes, "classifier.kind": kind})
                cfg.generate.cache_path = Path(args.out) / name / "llm_cache.sqlite"
                done = seeds[: k + 1]  # finished seeds are read back from their run folders
                data = compare_arms(
                    Path(args.out) / name / kind,
                    cfg,
                    done,
                    arms=ARMS,
                    progress=lambda m, kind=kind: print(f"[{kind}] {m}", flush=True),
                )
                rows[name, kind] = _row(name, kind, done, data)
                _write(_header(args, changes) + [rows[key] for key in sorted(rows)], args)


def _header(args, changes: dict) -> list[str]:
    return [
        "# Classifier kinds: real-only vs active synthesis (measured; negatives included)",
        "",
        f"Generator `{args.model}`, budget {args.budget} accepted texts, up to {args.rounds} rounds, "
        + (f"settings {changes}, " if changes else "")
        + "selection split = half of dev, kinds at their defaults unless set above (`hf`: MiniLM, weight "
        "chosen with heads on the frozen body, then one fine-tune). Test accuracy in points, mean ± sd over "
        "the seeds; Δ = paired difference to real-only. Seconds: the real-only fit; per active round, "
        "training (weight choice + fit) and the whole round (generate, filter, train, evaluate); means over "
        "seeds and rounds.",
        "",
        "| dataset | shots | kind | seeds | real-only | active | Δ active | synthetic used | real-only fit s "
        "| train s / round | s / round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _row(name: str, kind: str, seeds: list[int], data: dict) -> str:
    t = data["table"]

    def f(d):
        return f"{100 * d['mean']:.2f} ± {100 * d['sd']:.2f}"

    # the real-only model's fit: round 0 of each run's history (runs made before it was recorded: none)
    fits = [
        e["seconds"]["train"]
        for r in data["runs"]["real-only"]
        for e in r["rounds"]
        if e.get("stage") == "real-only" and (e.get("seconds") or {}).get("train")
    ]
    rounds = [e for r in data["runs"]["active"] for e in r["rounds"] if e.get("stage") == "retrained"]
    train = _mean([e["seconds"].get("train", 0.0) for e in rounds])
    total = _mean([sum(e["seconds"].values()) for e in rounds])
    used = _mean([r.get("synthetic_used", 0) for r in data["runs"]["active"]])
    return (
        f"| {name} | {SHOTS[name]} | {kind} | {','.join(map(str, seeds))} | {f(t['real-only']['accuracy'])} "
        f"| {f(t['active']['accuracy'])} | {f(t['active']['delta_accuracy_vs_real'])} | {used:.0f} "
        f"| {f'{_mean(fits):.1f}' if fits else '—'} | {train:.1f} | {total:.0f} |"
    )


def _write(lines: list[str], args) -> None:
    print("\n".join(lines), flush=True)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "classifiers.json").write_text(json.dumps({"lines": lines}, indent=2))


if __name__ == "__main__":
    main()
