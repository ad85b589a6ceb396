"""Run the loop with the simulated generator over a grid of settings; write the table and the plot.

Each configuration (dataset, seed, budget, ε, noise model, low-information share) runs the real loop (arms
untargeted and active; real-only once per dataset and seed) into its own run folder::

    <out>/<dataset>/seed-<S>/real-only/
    <out>/<dataset>/seed-<S>/b<budget>/<setting>/{untargeted,active}/   e.g. setting eps0.15-prototype

A finished run (``summary.json``, state done) is read back, an unfinished one resumes, so the command can be
re-run to complete a grid or, with ``--from-runs``, only rebuild the table and the plot. ε = 0 is the same
generator for every noise model and runs once (folder ``eps0``). Settings are those of ``make demo``
otherwise (10 shots, 2 rounds, selection split = half of dev) with robustness and report plots off (neither
changes a number here).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.simulate.generator import LeftOut, SimSettings, SimulatedGenerator, build_left_out

__all__ = ["fidelity", "main", "run_config", "settings_grid"]

ARMS = ("untargeted", "active")
NOISES = ("random", "boundary", "prototype")


def run_config(dataset: str, seed: int, arm: str, budget: int, args) -> object:
    """The run config of one arm: ``make demo``'s settings, robustness and plots off, seeded like
    ``compare_arms``. The backend entry names the simulator, so a resume through the CLI fails loudly
    instead of mixing in another generator."""
    from activesynth.agent.config import DataConfig, LoopConfig, ReportConfig, RunConfig

    cfg = RunConfig(
        data=DataConfig(
            dataset=dataset, shots=args.shots, seed=seed, selection_fraction=args.selection_fraction
        ),
        loop=LoopConfig(budget=budget, rounds=args.rounds, robustness=False),
        report=ReportConfig(plots=False),
        arm=arm,
        seed=seed,
    )
    cfg.classifier.seed = seed
    cfg.generate.planner.seed = seed
    cfg.generate.backend.model = "simulated (benchmarks.simulate)"
    changes = dict(getattr(args, "set", None) or {})
    if changes and arm != "real-only":  # a loop variant; real-only stays the one baseline of every grid
        from activesynth.agent.config import override

        cfg = override(cfg, changes)
    skip = set(getattr(args, "skip_filters", None) or ())
    if skip and arm != "real-only":  # real-only has no filter to skip: one baseline for every grid
        data = cfg.filter.model_dump()
        data["order"] = [x for x in data["order"] if x not in skip]
        if "leakage" in skip and "leakage_guard" in data:
            data["leakage_guard"] = False  # the chain refuses an order without it otherwise
        cfg.filter = type(cfg.filter).model_validate(data)
    return cfg


def _folder(s: SimSettings, args) -> str:
    """The setting's folder name; skipped filters and a variant's tag are part of it, so such runs never mix
    with others."""
    skip = sorted(getattr(args, "skip_filters", None) or ())
    tag = getattr(args, "tag", None)
    return s.key() + ("-skip-" + "-".join(skip) if skip else "") + (f"-{tag}" if tag else "")


def settings_grid(eps: list[float], noises: list[str], low_info: float, rivals: int, seed: int):
    """Distinct generator settings: ε = 0 once, then every (noise, ε > 0)."""
    out: list[SimSettings] = []
    if 0 in eps:
        out.append(SimSettings(eps=0, noise="none", low_info=low_info, rivals=rivals, seed=seed))
    for noise in noises:
        for e in eps:
            if e > 0:
                out.append(SimSettings(eps=e, noise=noise, low_info=low_info, rivals=rivals, seed=seed))
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def fidelity(run_path: Path) -> dict:
    """Label fidelity of what a simulated run served, accepted and used, from its ``simulator.jsonl``.

    A text is right when its true label (the real label of the served text) equals the label it was
    served as; texts are matched after the quality filter's normalisation."""
    from activesynth.evaluators.quality import normalize

    served = _jsonl(run_path / "simulator.jsonl")
    truth: dict[tuple[str, str], dict] = {}
    for r in served:
        truth.setdefault((normalize(r["text"]), r["label"]), r)

    def stats(records: list[dict]) -> dict:
        found = [truth.get((normalize(r["text"]), r["label"])) for r in records]
        known = [f for f in found if f is not None]
        return {
            "n": len(records),
            "matched": len(known),
            "fidelity": float(np.mean([f["true_label"] == f["label"] for f in known])) if known else None,
            "low_info": float(np.mean([f["kind"] == "low_info" for f in known])) if known else None,
        }

    accepted = []
    for rd in sorted(run_path.glob("round-[0-9][0-9]")):
        if (rd / "accepted.jsonl").exists():
            accepted += _jsonl(rd / "accepted.jsonl")
    used_path = run_path / "export" / "synthetic.json"
    used = json.loads(used_path.read_text()) if used_path.exists() else []
    kinds = [r["kind"] for r in served]
    return {
        "served": {
            "n": len(served),
            "noise": kinds.count("noise") / len(served) if served else None,
            "low_info": kinds.count("low_info") / len(served) if served else None,
            "fidelity": float(np.mean([r["true_label"] == r["label"] for r in served])) if served else None,
        },
        "accepted": stats(accepted),
        "used": stats(used),
    }


def _finished(path: Path, cfg) -> dict | None:
    """The summary of a finished run in ``path``, or None. A finished run whose saved settings disagree with
    ``cfg`` (on the settings both know: a field added to the config later is no disagreement) is an
    error, so another grid never reads it as its own."""
    import yaml

    summary, record = path / "summary.json", path / "run.json"
    if not (summary.exists() and record.exists()) or json.loads(record.read_text()).get("state") != "done":
        return None
    saved = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    mine = cfg.model_dump(mode="json")
    if cfg.arm == "real-only":  # no candidate is generated or filtered: those settings cannot matter
        for section in ("filter", "generate"):
            saved.pop(section, None)
            mine.pop(section, None)
    diff = _disagreement(saved, mine)
    if diff:
        raise SystemExit(f"{path}: holds a finished run with other settings ({diff}); choose another --out")
    return json.loads(summary.read_text())


def _disagreement(saved, new, where: str = "") -> str | None:
    """The first setting present in both configs with different values (None: they agree)."""
    if isinstance(saved, dict) and isinstance(new, dict):
        for k in saved.keys() & new.keys():
            d = _disagreement(saved[k], new[k], f"{where}.{k}" if where else k)
            if d:
                return d
        return None
    return None if saved == new else f"{where}: {saved!r} there, {new!r} here"


class Grid:
    """Runs (or reads back) every configuration; keeps one left-out pool per dataset and seed."""

    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out)
        self._pools: dict[tuple[str, int], LeftOut] = {}

    def pool(self, cfg) -> LeftOut:
        key = (cfg.data.dataset, cfg.data.seed)
        if key not in self._pools:
            from activesynth.agent.embed import Embedder

            t = time.perf_counter()
            e = cfg.embed
            emb = Embedder(e.model, cache_dir=e.cache_dir, precision=e.precision, batch_size=e.batch_size)
            self._pools[key] = build_left_out(cfg.data, emb, folds=self.args.oracle_folds)
            p = self._pools[key]
            print(
                f"[{key[0]} seed {key[1]}] left-out pool: {len(p.texts)} texts, {len(p.classes)} classes, "
                f"oracle fit in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
        return self._pools[key]

    def run(self, path: Path, cfg, settings: SimSettings | None, dry: bool) -> dict | None:
        """One arm: read it back if finished, else (unless ``dry``) run or resume it."""
        from activesynth.agent.loop import run_loop
        from activesynth.agent.runs import Run

        summary = _finished(path, cfg)
        if summary is None:
            if dry:
                return None
            run = Run.create(path, cfg)
            with run.lock():
                tag = f"[{cfg.data.dataset} s{cfg.seed} {path.parent.name} {cfg.arm}]"
                backend = None
                if settings is not None:
                    backend = SimulatedGenerator(self.pool(cfg), settings, path / "simulator.jsonl")
                    info = {"model_id": backend.model_id, **backend.settings.model_dump()}
                    (path / "simulator.json").write_text(json.dumps(info, indent=2) + "\n")
                t = time.perf_counter()
                summary = run_loop(run, lambda m: print(f"{tag} {m}", flush=True), backend)
                print(f"{tag} done in {time.perf_counter() - t:.0f} s", flush=True)
        if settings is not None:
            fpath = path / "simulation.json"
            if not fpath.exists():
                fpath.write_text(json.dumps(fidelity(path), indent=2) + "\n")
            summary["simulation"] = json.loads(fpath.read_text())
        return summary

    def all(self, dry: bool) -> dict:
        """Every configuration in seed-major order (a cut-short grid covers every dataset first)."""
        a = self.args
        results: dict = {}
        grid = settings_grid(a.eps, a.noise, a.low_info, a.rivals, a.sim_seed)
        for seed in a.seeds:
            for ds in a.datasets:
                cfg = run_config(ds, seed, "real-only", 0, a)
                base = self.run(self.out / ds / f"seed-{seed}" / "real-only", cfg, None, dry)
                if base is None:
                    continue
                results.setdefault((ds, "real-only"), {})[seed] = base
                for budget in a.budgets:
                    for s in grid:
                        for arm in ARMS:
                            path = self.out / ds / f"seed-{seed}" / f"b{budget}" / _folder(s, a) / arm
                            summary = self.run(path, run_config(ds, seed, arm, budget, a), s, dry)
                            if summary is not None:
                                results.setdefault((ds, budget, s.key(), arm), {})[seed] = summary
                        if not dry:
                            write_outputs(results, a)
        return results


# ----------------------------------------------------------------------------------------------------------
# Table and plot


def _acc(summary: dict) -> float:
    return summary["final"]["test"]["accuracy"]


def _cell(values: list[float], scale: float = 100.0, sign: bool = True) -> str:
    if not values:
        return "—"
    a = np.array(values) * scale
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():+.2f} ± {sd:.2f}" if sign else f"{a.mean():.2f} ± {sd:.2f}"


def _present(values) -> list[float]:
    return [v for v in values if v is not None]


def _rows(results: dict, args):
    """(dataset, budget, setting, noise, eps, {arm: (deltas, fidelities, used, minutes, seeds)})."""
    grid = settings_grid(args.eps, args.noise, args.low_info, args.rivals, args.sim_seed)
    for ds in args.datasets:
        base = results.get((ds, "real-only"), {})
        for budget in args.budgets:
            for s in grid:
                per_arm = {}
                for arm in ARMS:
                    runs = results.get((ds, budget, s.key(), arm), {})
                    seeds = sorted(x for x in runs if x in base)
                    per_arm[arm] = {
                        "seeds": seeds,
                        "delta": [_acc(runs[x]) - _acc(base[x]) for x in seeds],
                        "fidelity": _present(runs[x]["simulation"]["accepted"]["fidelity"] for x in seeds),
                        "served": _present(runs[x]["simulation"]["served"]["fidelity"] for x in seeds),
                        "used": [runs[x]["synthetic_used"] for x in seeds],
                        "minutes": [runs[x]["seconds"] / 60 for x in seeds],
                    }
                if any(v["seeds"] for v in per_arm.values()):
                    yield ds, budget, s, per_arm


def markdown(results: dict, args) -> str:
    lines = [
        "# Simulated generator: what a generator of a given label-noise rate is worth",
        "",
        "`python -m benchmarks.simulate` (see `benchmarks/simulate/`). The LLM is replaced by a simulated "
        "generator that answers every request with real training texts the few-shot sample left out (never "
        "dev, selection or test); a share ε of them are texts of one of the requested label's 3 most "
        "confusable classes, returned as the requested label: *random* (any text of the rival), *boundary* "
        "(the rival text an oracle head finds most like the requested label) or *prototype* (the rival's "
        "most typical text). The loop's real planner, parser, filters, weighting and rollback run unchanged; "
        f"{args.shots} shots, up to {args.rounds} rounds, selection split = {args.selection_fraction:g} of "
        f"dev, robustness off, low-information share {args.low_info:g}"
        + (f", filters skipped: {', '.join(args.skip_filters)}." if args.skip_filters else "."),
        "",
        "Δ = test accuracy minus real-only's (same dataset and seed), in points, mean ± sd over the seeds "
        "listed. Label fidelity: share of the served texts, and of the accepted ones (all rounds, "
        "rolled-back ones included), whose true label is the one they were served as; served → accepted "
        "is the filters' effect. Used: synthetic texts in the final model. Minutes: one arm's run time.",
        "",
        "| dataset | budget | noise | ε | seeds | Δ untargeted | Δ active | active − untargeted "
        "| label fidelity served → accepted (u / a) | used (u / a) | minutes (u / a) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, budget, s, arm in _rows(results, args):
        u, a = arm["untargeted"], arm["active"]
        both = sorted(set(u["seeds"]) & set(a["seeds"]))
        diff = [a["delta"][a["seeds"].index(x)] - u["delta"][u["seeds"].index(x)] for x in both]

        def mean(v, fmt="{:.2f}"):
            return fmt.format(np.mean(v)) if v else "—"

        seeds = ",".join(map(str, sorted(set(u["seeds"]) | set(a["seeds"]))))
        lines.append(
            f"| {ds} | {budget} | {'—' if s.noise == 'none' else s.noise} | {s.eps:g} | {seeds} "
            f"| {_cell(u['delta'])} | {_cell(a['delta'])} | {_cell(diff)} "
            f"| {mean(u['served'])} → {mean(u['fidelity'])} / {mean(a['served'])} → {mean(a['fidelity'])} "
            f"| {mean(u['used'], '{:.0f}')} / "
            f"{mean(a['used'], '{:.0f}')} | {mean(u['minutes'], '{:.1f}')} / {mean(a['minutes'], '{:.1f}')} |"
        )
    base_lines = []
    for ds in args.datasets:
        base = results.get((ds, "real-only"), {})
        if base:
            accs = [_acc(base[x]) for x in sorted(base)]
            seeds = ",".join(map(str, sorted(base)))
            base_lines.append(f"- {ds}: real-only test accuracy {_cell(accs, sign=False)} (seeds {seeds})")
    return "\n".join(lines + ([""] + base_lines if base_lines else [])) + "\n"


def plot(results: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(_rows(results, args))
    if not rows:
        return
    datasets = [d for d in args.datasets if any(r[0] == d for r in rows)]
    budgets = [b for b in args.budgets if any(r[1] == b for r in rows)]
    fig, axes = plt.subplots(
        len(datasets), len(budgets), figsize=(5 * len(budgets), 3.8 * len(datasets)), squeeze=False
    )
    colors = {"random": "tab:blue", "boundary": "tab:orange", "prototype": "tab:red"}
    for i, ds in enumerate(datasets):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            mine = [r for r in rows if r[0] == ds and r[1] == budget]
            zero = {arm: r[3][arm] for r in mine if r[2].eps == 0 for arm in ARMS}
            for noise in args.noise:
                if not any(r[2].noise == noise for r in mine):
                    continue  # only ε = 0 measured: no line for this noise model here
                for arm, style in (("untargeted", "--"), ("active", "-")):
                    pts = []
                    if zero.get(arm, {}).get("delta"):
                        pts.append((0.0, zero[arm]["delta"]))
                    pts += [(r[2].eps, r[3][arm]["delta"]) for r in mine if r[2].noise == noise]
                    pts = sorted((x, v) for x, v in pts if v)
                    if not pts:
                        continue
                    xs = [x for x, _ in pts]
                    ms = [100 * np.mean(v) for _, v in pts]
                    sds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0.0 for _, v in pts]
                    ax.errorbar(
                        xs,
                        ms,
                        yerr=sds,
                        linestyle=style,
                        marker="o",
                        capsize=3,
                        color=colors.get(noise),
                        label=f"{arm}, {noise}",
                        alpha=0.85,
                    )
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_title(f"{ds}, budget {budget}")
            ax.set_xlabel("label-noise rate ε")
            ax.set_ylabel("Δ test accuracy vs real-only (points)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, args) -> None:
    text = markdown(results, args)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text, encoding="utf-8")
    plot(results, args, Path(args.plot))
    print(text, flush=True)


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.simulate", description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="banking77,hwu64", type=lambda s: s.split(","))
    ap.add_argument("--eps", default="0,0.05,0.15,0.30", type=_floats, help="label-noise rates")
    ap.add_argument("--noise", default="random,boundary,prototype", type=lambda s: s.split(","))
    ap.add_argument("--budgets", default="100,300", type=_ints)
    ap.add_argument("--seeds", default="0,1,2", type=_ints)
    ap.add_argument("--low-info", type=float, default=0.0, help="share of near-copies of prompt examples")
    ap.add_argument("--rivals", type=int, default=3, help="most confusable classes wrong texts come from")
    ap.add_argument("--sim-seed", type=int, default=0, help="seed of the simulator's draws")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--selection-fraction", type=float, default=0.5)
    ap.add_argument(
        "--skip-filters",
        default="",
        type=lambda s: [x for x in s.split(",") if x],
        help="filters to leave out of the chain, e.g. leakage (a diagnostic; runs go to their own folders)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a loop setting for the synthetic arms (dotted, as activesynth run --set); needs --tag",
    )
    ap.add_argument("--tag", default=None, help="name of a loop variant (its runs go to their own folders)")
    ap.add_argument("--oracle-folds", type=int, default=5, help="cross-fitting folds of the oracle head")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="runs/simulate")
    ap.add_argument("--results", default="benchmarks/results/simulate.md")
    ap.add_argument("--plot", default="benchmarks/results/simulate.png")
    ap.add_argument("--from-runs", action="store_true", help="run nothing: rebuild table and plot")
    args = ap.parse_args(argv)
    from activesynth.agent.config import parse_assignment

    args.set = dict(parse_assignment(x) for x in args.set)
    if args.set and not args.tag:
        ap.error("--set changes the loop: name the variant with --tag so its runs get their own folders")
    bad = [n for n in args.noise if n not in NOISES]
    if bad:
        ap.error(f"--noise: unknown model(s) {bad}; choose from {list(NOISES)}")
    if any(not 0 <= e <= 1 for e in args.eps) or not 0 <= args.low_info <= 1:
        ap.error("--eps and --low-info must lie in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from activesynth.agent.runs import RunError

    try:
        results = Grid(args).all(dry=args.from_runs)
    except RunError as e:  # a run folder that holds other settings: one line, nothing overwritten
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    write_outputs(results, args)
