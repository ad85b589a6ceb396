"""Template choice by measured yield: per-family yields read from a run's rounds, and the weights the loop
gives the next round's planner (``generate.planner.template_bandit``)."""

from __future__ import annotations

import pytest

from activesynth.agent.config import RunConfig
from activesynth.agent.loop import family_weights, family_yields, round_generate_config
from activesynth.agent.runs import Round, Run


def _round(run: Run, n: int, items: list[tuple[str, str, int]], accepted: list[str]) -> None:
    rnd = run.round(n)
    rnd.path.mkdir(parents=True, exist_ok=True)
    rnd.write_json(
        Round.PLAN,
        {
            "n_texts": sum(k for *_, k in items),
            "items": [{"id": i, "family": f, "n_texts": k} for i, f, k in items],
        },
    )
    rnd.write_jsonl(Round.ACCEPTED, [{"id": f"a{j}", "plan_item": p} for j, p in enumerate(accepted)])
    rnd.write_json(Round.FILTER_REPORT, {"n_accepted": len(accepted)})


@pytest.fixture
def run(tmp_path):
    cfg = RunConfig.model_validate(
        {"data": {"dataset": "banking77"}, "generate": {"planner": {"template_bandit": True}}}
    )
    run = Run.create(tmp_path / "run", cfg)
    _round(run, 1, [("p000", "contrastive", 40), ("p001", "list", 20)], ["p000"] * 4 + ["p001"] * 10)
    _round(run, 2, [("p000", "contrastive", 20), ("p001", "evol_depth", 10)], ["p000"] * 2)
    return run


def test_yields_count_accepted_texts_per_text_asked_by_family(run):
    assert family_yields(run, 1) == {}
    assert family_yields(run, 2) == {"contrastive": (4, 40), "list": (10, 20)}
    assert family_yields(run, 3) == {"contrastive": (6, 60), "list": (10, 20), "evol_depth": (0, 10)}


def test_weights_favour_what_pays_and_keep_every_family_measured():
    w = family_weights({"contrastive": (6, 60), "list": (10, 20), "evol_depth": (0, 10)})
    assert w["list"] > w["contrastive"] > w["evol_depth"] > 0
    assert family_weights({"a": (0, 200), "b": (150, 200), "c": (150, 200)})["a"] == 0.25  # the floor
    assert family_weights({}) == {}
    even = family_weights({"list": (5, 10), "contrastive": (5, 10)})
    assert even == {"contrastive": 1.0, "list": 1.0}
    assert max(family_weights({"a": (100, 100), "b": (0, 100), "c": (0, 100)}).values()) <= 4.0


def test_the_loop_sets_the_next_rounds_family_weights(run):
    g = round_generate_config(run, 3, ask=50)
    assert g.planner.family_weights == family_weights(family_yields(run, 3))
    assert g.planner.family_weights["list"] > g.planner.family_weights["contrastive"]
    assert round_generate_config(run, 1, ask=50).planner.family_weights == {}
    off = Run.create(run.path.parent / "off", run.config.model_copy(deep=True))
    off.config.generate.planner.template_bandit = False
    assert round_generate_config(off, 3, ask=50).planner.family_weights == {}
