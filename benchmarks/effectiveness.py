"""Effectiveness: real-only vs untargeted vs active synthesis at equal accepted budget, per dataset.

Runs ``compare_arms`` with the embedded generator on BANKING77, HWU64, Rotten Tomatoes and CLINC150 (seeds
0,1,2 by default) and writes ``benchmarks/results/effectiveness.md`` with mean ± sd of test accuracy and the
paired difference to real-only, negatives included. It takes hours on 2 cores at the full settings; use
``--datasets`` / ``--seeds`` / ``--budget`` for a smaller measurement (the table records what was run).

    python -m benchmarks.effectiveness --datasets banking77 --seeds 0 --budget 100 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHOTS = {"banking77": 10, "hwu64": 10, "clinc150": 10, "rotten_tomatoes": 10}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="banking77,hwu64,rotten_tomatoes,clinc150")
    add_run_options(ap, budget=300)
    ap.add_argument("--out", default="runs/effectiveness")
    ap.add_argument("--results", default="benchmarks/results/effectiveness.md")
    ap.add_argument(
        "--from-runs",
        action="store_true",
        help="run nothing: rebuild the table from each dataset's comparison.json under --out",
    )
    args = ap.parse_args()

    from activesynth.agent.config import parse_assignment
    from activesynth.agent.experiments.arms import compare_arms

    changes = dict(parse_assignment(x) for x in args.set)
    if args.shots:
        SHOTS.update(dict.fromkeys(SHOTS, args.shots))

    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",")
    header = [
        "# Effectiveness (measured; negatives included)",
        "",
        f"Generator `{args.model}`, budget {args.budget} accepted texts per arm, up to {args.rounds} rounds, "
        + (f"settings {changes}, " if changes else "")
        + "selection split = half of dev. Test accuracy in points, mean ± sd over the seeds listed; "
        "Δ = paired difference to real-only. Minutes per seed: a synthetic arm's own run time "
        "(mean over seeds).",
        "",
        "| dataset | shots | seeds | real-only | untargeted | Δ untargeted | active | Δ active "
        "| active − untargeted | synthetic used (u / a) | minutes per seed (u / a) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows: dict[str, str] = {}
    if args.from_runs:
        for name in names:
            path = Path(args.out) / name / "comparison.json"
            if path.exists():
                data = json.loads(path.read_text())
                rows[name] = _row(name, data["seeds"], data)
        _write(header + [rows[n] for n in names if n in rows], args)
        return
    # seed-major: every dataset gets seed 0 before any gets seed 1, so a cut-short run still covers all
    for k in range(len(seeds)):
        for name in names:
            cfg = base_config(name, args, changes)
            done = seeds[: k + 1]  # finished seeds are read back from their run folders
            data = compare_arms(Path(args.out) / name, cfg, done, progress=lambda m: print(m, flush=True))
            rows[name] = _row(name, done, data)
            _write(header + [rows[n] for n in names if n in rows], args)


def add_run_options(ap: argparse.ArgumentParser, budget: int) -> None:
    """The options every arm-comparison benchmark takes: seeds, budget, rounds, generator, shots, settings."""
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=budget)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=None, help="generator threads (default: llama.cpp's)")
    ap.add_argument("--shots", type=int, default=None, help="real texts per class (default: 10 everywhere)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any run setting (dotted)"
    )


def base_config(name: str, args, changes: dict):
    """The run config of one dataset as this benchmark runs it: ``SHOTS[name]`` real texts per class, half of
    dev as the selection split, ``args.budget`` / ``args.rounds``, generator ``args.model`` on
    ``args.threads`` threads, then the dotted ``changes`` (``--set``)."""
    from activesynth.agent.config import DataConfig, LoopConfig, RunConfig, override

    cfg = RunConfig(
        data=DataConfig(dataset=name, shots=SHOTS[name], selection_fraction=0.5),
        loop=LoopConfig(budget=args.budget, rounds=args.rounds),
    )
    cfg.generate.backend.model = args.model
    cfg.generate.backend.threads = args.threads
    return override(cfg, changes)


def _write(lines: list[str], args) -> None:
    print("\n".join(lines), flush=True)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n")
    (Path(args.out) / "effectiveness.json").write_text(json.dumps({"lines": lines}, indent=2))


def _row(name: str, seeds: list[int], data: dict) -> str:
    t = data["table"]

    def f(d):
        return f"{100 * d['mean']:.2f} ± {100 * d['sd']:.2f}"

    diff = [
        a - u
        for a, u in zip(t["active"]["accuracy"]["values"], t["untargeted"]["accuracy"]["values"], strict=True)
    ]
    mean_diff = 100 * sum(diff) / len(diff)
    used = {
        arm: sum(r.get("synthetic_used", 0) for r in data["runs"][arm]) / len(seeds)
        for arm in ("untargeted", "active")
    }
    # a run's own seconds (kept in its summary), so a table rebuilt from finished runs keeps their cost
    per_seed = {
        arm: sum(r.get("seconds") or 0.0 for r in data["runs"][arm]) / 60 / len(seeds)
        for arm in ("untargeted", "active")
    }
    return (
        f"| {name} | {SHOTS[name]} | {','.join(map(str, seeds))} | {f(t['real-only']['accuracy'])} "
        f"| {f(t['untargeted']['accuracy'])} | {f(t['untargeted']['delta_accuracy_vs_real'])} "
        f"| {f(t['active']['accuracy'])} | {f(t['active']['delta_accuracy_vs_real'])} | {mean_diff:+.2f} "
        f"| {used['untargeted']:.0f} / {used['active']:.0f} "
        f"| {per_seed['untargeted']:.0f} / {per_seed['active']:.0f} |"
    )


if __name__ == "__main__":
    main()
