"""benchmarks/classifiers.py: the table it writes from finished comparisons (``--from-runs``), without running
a model."""

from __future__ import annotations

import json

import pytest


def _summary(arm: str, acc: float, rounds: list[dict]) -> dict:
    return {"arm": arm, "seed": 0, "synthetic_used": 0 if arm == "real-only" else 20, "rounds": rounds}


def test_from_runs_rebuilds_the_table(tmp_path):
    from benchmarks import classifiers

    comparison = {
        "seeds": [0],
        "table": {
            "real-only": {"accuracy": {"mean": 0.5, "sd": 0.0}},
            "active": {
                "accuracy": {"mean": 0.53, "sd": 0.0},
                "delta_accuracy_vs_real": {"mean": 0.03, "sd": 0},
            },
        },
        "runs": {
            "real-only": [_summary("real-only", 0.5, [{"stage": "real-only", "seconds": {"train": 12.5}}])],
            "active": [
                _summary(
                    "active",
                    0.53,
                    [
                        {"stage": "real-only", "seconds": {"train": 12.0}},
                        {"stage": "retrained", "seconds": {"generate": 60.0, "train": 20.0, "evaluate": 4.0}},
                    ],
                )
            ],
        },
    }
    folder = tmp_path / "out" / "rotten_tomatoes" / "hf"
    folder.mkdir(parents=True)
    (folder / "comparison.json").write_text(json.dumps(comparison))
    results = tmp_path / "classifiers.md"
    classifiers.main(
        [
            "--datasets",
            "rotten_tomatoes",
            "--kinds",
            "hf",
            "--out",
            str(tmp_path / "out"),
            "--results",
            str(results),
        ]
        + ["--from-runs"]
    )
    row = next(line for line in results.read_text().splitlines() if line.startswith("| rotten_tomatoes"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "rotten_tomatoes",
        "10",
        "hf",
        "0",
        "50.00 ± 0.00",
        "53.00 ± 0.00",
        "3.00 ± 0.00",
        "20",
    ] + [
        "12.5",  # the real-only fit (round 0 of the real-only run)
        "20.0",  # training seconds per active round
        "84",  # the whole active round
    ]
    with pytest.raises(SystemExit):
        classifiers.main(["--kinds", "forest", "--from-runs"])
