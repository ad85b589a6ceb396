"""Data efficiency: real-only and active synthesis at several shot counts; how many real labels per class is
synthesis worth (``efficiency.json``, ``efficiency.png``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from activesynth.agent.config import RunConfig
from activesynth.agent.datasets import load
from activesynth.agent.experiments.arms import compare_arms
from activesynth.agent.files import write_json

__all__ = ["efficiency"]

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


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
    say = progress or _quiet
    out = Path(out)
    if shots:  # the largest shot count must be sampleable in every class: refused before any run starts
        load(base.data.model_copy(update={"shots": max(shots), "pii_scrub": False}))
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
    _plot(curves, xs, out / "efficiency.png")
    return result


def _plot(curves: dict[str, dict[int, float]], xs: list[int], path: Path) -> None:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
