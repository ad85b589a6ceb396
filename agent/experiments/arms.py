"""Arm comparisons: real-only, untargeted and active synthesis at equal budget, over seeds, each arm a full
run of the loop under ``<out>/seed-S/<arm>``, with a table (mean ± sd, differences to real-only paired by
seed) and a plot of test accuracy per round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from activesynth.agent.config import RunConfig
from activesynth.agent.files import write_atomic, write_json
from activesynth.agent.loop import run_loop
from activesynth.agent.progress import prefixed
from activesynth.agent.runs import Comparison, Run

__all__ = ["ARMS", "compare_arms", "comparison_markdown", "comparison_table"]

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


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
    comparison = Comparison(out)
    with comparison.lock():
        comparison.save(base, seeds)
        results = {a: [] for a in arms}
        for seed in seeds:
            for arm in arms:
                say(f"seed {seed}: arm {arm}")
                results[arm].append(_arm(comparison, base, seed, arm, backend, say))
        return _write(comparison, results, seeds, arms)


def _arm(comparison: Comparison, base: RunConfig, seed: int, arm: str, backend, say: Say) -> dict:
    """One arm of one seed (a finished arm is read back, an unfinished one resumed)."""
    cfg = base.model_copy(deep=True)
    cfg.seed = seed
    cfg.arm = arm
    cfg.data.seed = seed
    cfg.classifier.seed = seed
    cfg.generate.cache_path = base.generate.cache_path or comparison.file(Comparison.LLM_CACHE)
    cfg.generate.planner.seed = seed
    run = Run.create(comparison.arm_path(seed, arm), cfg)
    with run.lock():
        summary = run.summary() if run.record().get("state") == "done" else None
        return summary or run_loop(run, prefixed(say, f"[seed {seed} {arm}] "), backend)


def _write(comparison: Comparison, results: dict[str, list[dict]], seeds: list[int], arms) -> dict:
    table = comparison_table(results)
    data = {
        "seeds": seeds,
        "arms": list(arms),
        "table": table,
        "runs": {a: [_short(s) for s in v] for a, v in results.items()},
    }
    write_json(comparison.file(Comparison.RESULT), data)
    write_atomic(comparison.file(Comparison.TABLE), comparison_markdown(table, seeds))
    _plot_rounds(results, comparison.file(Comparison.PLOT))
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
