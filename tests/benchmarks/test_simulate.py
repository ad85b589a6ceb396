"""The simulated generator: noise rate, rival texts, no held-out text, parseable answers, distinct model ids.

A small real BANKING77 slice (8 intents, 30 training texts each, 5 shots) with two dev and two test texts
planted in the training file, so a simulator that forgot to exclude held-out texts would serve them.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activesynth.agent.config import DataConfig
from activesynth.agent.datasets import load
from activesynth.agent.llm.protocol import GenerationRequest
from activesynth.evaluators.quality import normalize
from benchmarks.simulate.generator import SimSettings, SimulatedGenerator, build_left_out, near_copy
from tests.conftest import SMALL_LABELS, banking_slice, write_csv

SHOTS = 5


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("simdata")
    dev = banking_slice("dev", SMALL_LABELS, 8)
    test = banking_slice("test", SMALL_LABELS, 10)
    train = banking_slice("train", SMALL_LABELS, 30) + dev[:2] + test[:2]  # planted held-out texts
    return {
        "train": write_csv(d / "train.csv", train),
        "dev": write_csv(d / "dev.csv", dev),
        "test": write_csv(d / "test.csv", test),
    }


@pytest.fixture(scope="module")
def data_cfg(sim_files) -> DataConfig:
    return DataConfig(**sim_files, shots=SHOTS, seed=0, selection_fraction=0.5)


@pytest.fixture(scope="module")
def pool(data_cfg, embedder):
    return build_left_out(data_cfg, embedder, folds=3)


def _requests(labels: list[str], n_requests: int, texts_per_sample: int = 2, examples=()) -> list:
    meta_ex = json.dumps(list(examples))
    return [
        GenerationRequest(
            id=f"r{i}",
            mode="completion",
            prompt="Messages.\n1. example\n2.",
            n=1,
            meta=(("label", labels[i % len(labels)]), ("n", str(texts_per_sample)), ("examples", meta_ex)),
        )
        for i in range(n_requests)
    ]


def _tolerance(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("noise", ["random", "boundary", "prototype"])
@pytest.mark.parametrize("eps", [0.0, 0.15, 0.3])
def test_measured_noise_rate_equals_eps(pool, noise, eps):
    sim = SimulatedGenerator(pool, SimSettings(eps=eps, noise=noise if eps else "none"))
    sim.generate(_requests(SMALL_LABELS, 1000))
    served = [r for r in sim.log]
    assert len(served) == 2000
    wrong = sum(r["true_label"] != r["label"] for r in served) / len(served)
    assert abs(wrong - eps) <= _tolerance(eps, len(served))
    assert sum(r["kind"] == "noise" for r in served) / len(served) == pytest.approx(wrong)


def test_low_info_share_and_near_copies(pool):
    examples = ["I still have not received my new card", "Where is my card?", "card arrival please"]
    sim = SimulatedGenerator(pool, SimSettings(eps=0.2, noise="random", low_info=0.25))
    sim.generate(_requests(["card_arrival"], 400, examples=examples))
    low = [r for r in sim.log if r["kind"] == "low_info"]
    assert abs(len(low) / len(sim.log) - 0.25) <= _tolerance(0.25, len(sim.log))
    assert all(r["text"] not in examples and r["true_label"] == r["label"] for r in low)
    real = [r for r in sim.log if r["kind"] != "low_info"]
    wrong = sum(r["true_label"] != r["label"] for r in real) / len(real)
    assert abs(wrong - 0.2) <= _tolerance(0.2, len(real))  # eps is the noise share among real texts


@pytest.mark.parametrize("noise", ["random", "boundary", "prototype"])
def test_wrong_texts_are_real_texts_of_a_rival_class(pool, sim_files, noise):
    import csv

    with open(sim_files["train"], newline="", encoding="utf-8") as f:
        gold = {row["text"]: row["label"] for row in csv.DictReader(f)}
    sim = SimulatedGenerator(pool, SimSettings(eps=0.5, noise=noise, rivals=2))
    sim.generate(_requests(SMALL_LABELS, 60))
    wrong = [r for r in sim.log if r["kind"] == "noise"]
    assert wrong
    for r in wrong:
        assert gold[r["text"]] == r["true_label"] != r["label"]  # a real training text of another class
        assert r["true_label"] in pool.rivals[r["label"]][:2]  # one of the label's two top rivals
    assert all(gold[r["text"]] == r["label"] for r in sim.log if r["kind"] == "clean")


@pytest.mark.parametrize("noise", ["boundary", "prototype"])
def test_noise_models_pick_by_the_oracle(pool, noise):
    label = SMALL_LABELS[0]
    sim = SimulatedGenerator(pool, SimSettings(eps=1.0, noise=noise, rivals=1))
    sim.generate(_requests([label], 1, texts_per_sample=1))
    (first,) = sim.log
    rival = pool.rivals[label][0]
    col = pool.col(label if noise == "boundary" else rival)
    scores = {pool.texts[i]: pool.proba[i, col] for i in pool.by_label[rival]}
    assert first["true_label"] == rival
    assert scores[first["text"]] == max(scores.values())


def test_never_serves_a_dev_selection_test_or_few_shot_text(pool, data_cfg):
    ds = load(data_cfg)
    assert ds.select is not None and len(ds.select) > 0
    test_texts, _ = ds.test.reveal("evaluation")
    held = {
        "train": {normalize(t) for t in ds.train.texts},
        "dev": {normalize(t) for t in ds.dev.texts},
        "select": {normalize(t) for t in ds.select.texts},
        "test": {normalize(t) for t in test_texts},
    }
    full = load(data_cfg.model_copy(update={"shots": None}))
    planted = {normalize(t) for t in full.train.texts} & (held["dev"] | held["select"] | held["test"])
    assert len(planted) >= 3  # the fixture really offers held-out texts in the training file
    sim = SimulatedGenerator(pool, SimSettings(eps=0.3, noise="boundary"))
    sim.generate(_requests(SMALL_LABELS, 800))  # far more than the pool: every text gets served
    served = {normalize(r["text"]) for r in sim.log}
    assert len(served) == len(pool.texts)
    for role, texts in held.items():
        assert not served & texts, role
    assert served <= {normalize(t) for t in full.train.texts}


def test_without_replacement_and_resume_from_log(pool, tmp_path):
    log = tmp_path / "sim.jsonl"
    sim = SimulatedGenerator(pool, SimSettings(eps=0.15, noise="prototype"), log)
    sim.generate(_requests(SMALL_LABELS, 40))
    texts = [r["text"] for r in sim.log]
    assert len(set(texts)) == len(texts) and sim.reused == 0
    again = SimulatedGenerator(pool, SimSettings(eps=0.15, noise="prototype"), log)
    assert len(again.log) == len(texts)
    fresh = [GenerationRequest(**{**r.__dict__, "id": "x" + r.id}) for r in _requests(SMALL_LABELS, 40)]
    again.generate(fresh)
    later = [r["text"] for r in again.log[len(texts) :]]
    assert not set(later) & set(texts)  # a resumed run serves nothing twice


def test_answers_parse_into_candidates_with_the_requested_label(pool):
    from activesynth.agent.planner import Plan, PlanItem
    from activesynth.agent.synthesize import candidates_from_results, render_requests

    ex = {lab: [pool.texts[i] for i in pool.by_label[lab][:6]] for lab in SMALL_LABELS}
    items = []
    for k, (family, template) in enumerate(
        [
            ("list", "self_instruct_list"),
            ("contrastive", "contrastive_pair_list"),
            ("evol_depth", "evol_in_depth_list"),
            ("list", "self_instruct_chat"),
            ("contrastive", "contrastive_pair"),
            ("evol_depth", "evol_in_depth"),
            ("evol_breadth", "evol_in_breadth"),
        ]
    ):
        a, b = SMALL_LABELS[k], SMALL_LABELS[k + 1]
        items.append(
            PlanItem(
                id=f"p{k:03d}", label=a, family=family, template=template, n_texts=6, n_samples=3,
                pair=[a, b] if family == "contrastive" else None, examples=ex[a], contrast_examples=ex[b],
                source_texts=ex[a][:2] if family == "evol_depth" else [],
            )
        )  # fmt: skip
    # model_construct: only what render_requests reads (the plan's total field is being renamed elsewhere)
    plan = Plan.model_construct(created="now", task="Bank messages", mode="targeted", items=items)
    jobs = render_requests(plan)
    meta = dict(jobs[0].request.meta)
    assert meta["label"] == items[0].label and json.loads(meta["examples"]) == jobs[0].examples
    sim = SimulatedGenerator(pool, SimSettings(eps=0.3, noise="random"))
    results = sim.generate([j.request for j in jobs])
    records, _ = candidates_from_results(jobs, results, 1, sim.name, sim.model_id, keep_surplus=True)
    by_item = {it.id: it.label for it in items}
    served = {(r["request"], normalize(r["text"])) for r in sim.log}
    parsed = [r for r in records if r["status"] == "parsed"]
    assert len(parsed) >= 0.95 * len(sim.log)
    for r in parsed:
        assert r["label"] == by_item[r["plan_item"]]
        assert (r["prompt_id"], normalize(r["text"])) in served
    for it in items:
        rewrite = it.family == "evol_depth" and it.template.endswith("_list")
        got = [r for r in parsed if r["plan_item"] == it.id]
        assert len(got) >= (it.n_samples if rewrite else it.n_texts)


def test_model_id_differs_across_settings(pool):
    variants = [
        SimSettings(eps=0.15, noise="random"),
        SimSettings(eps=0.3, noise="random"),
        SimSettings(eps=0.15, noise="boundary"),
        SimSettings(eps=0.15, noise="prototype"),
        SimSettings(eps=0.15, noise="random", low_info=0.2),
        SimSettings(eps=0.15, noise="random", rivals=5),
        SimSettings(eps=0.15, noise="random", seed=1),
        SimSettings(eps=0.0, noise="none"),
    ]
    ids = [SimulatedGenerator(pool, s).model_id for s in variants]
    assert len(set(ids)) == len(ids)
    assert len({s.key() for s in variants}) == len(variants)
    # eps 0 is one generator whatever the noise model says
    assert SimulatedGenerator(pool, SimSettings(eps=0, noise="prototype")).model_id == ids[-1]


def test_meta_stays_out_of_the_cache_key():
    a = GenerationRequest(id="a", mode="completion", prompt="p", meta=(("label", "x"),))
    b = GenerationRequest(id="a", mode="completion", prompt="p", meta=(("label", "y"),))
    assert a.cache_key("m", 0) == b.cache_key("m", 0)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60), st.integers(0, 10**6))
def test_near_copy_never_returns_the_text(text, seed):
    assert near_copy(text, random.Random(seed)) != text


@pytest.mark.slow
def test_one_loop_round_with_the_simulated_generator(tmp_path, sim_files, embed_cache, embedder, pool):
    from activesynth.agent.config import EmbedConfig, LoopConfig, ReportConfig, RunConfig
    from activesynth.agent.loop import run_loop
    from activesynth.agent.runs import Run
    from benchmarks.simulate.grid import _jsonl, fidelity

    cfg = RunConfig(
        data=DataConfig(**sim_files, shots=SHOTS, seed=0, selection_fraction=0.5),
        embed=EmbedConfig(cache_dir=embed_cache),
        report=ReportConfig(n_clusters=3, plots=False),
        loop=LoopConfig(rounds=1, budget=16, robustness=False),
        arm="active",
    )
    run = Run.create(tmp_path / "run", cfg)
    sim = SimulatedGenerator(pool, SimSettings(eps=0.15, noise="prototype"), run.path / "simulator.jsonl")
    summary = run_loop(run, backend=sim)
    rdir = run.round_dir(1)
    cands = _jsonl(rdir / "candidates.jsonl")
    accepted = _jsonl(rdir / "accepted.jsonl")
    assert cands and accepted
    assert all(c["model"] == sim.model_id and c["backend"] == "simulated" for c in cands)
    assert {c["label"] for c in cands} <= set(SMALL_LABELS)
    assert 0 < summary["synthetic_used"] <= 16
    fid = fidelity(run.path)
    assert fid["accepted"]["n"] == len(accepted) and fid["accepted"]["matched"] == len(accepted)
    assert 0 <= fid["accepted"]["fidelity"] <= 1 and fid["served"]["n"] == len(sim.log)


def test_grid_runs_eps_zero_once_and_refuses_other_settings():
    from benchmarks.simulate.grid import _disagreement, parse_args, settings_grid

    grid = settings_grid([0, 0.05, 0.3], ["random", "boundary", "prototype"], 0.0, 3, 0)
    assert len(grid) == 1 + 3 * 2 and [s.eps for s in grid].count(0) == 1
    assert len({s.key() for s in grid}) == len(grid)
    saved = {"data": {"shots": 10, "seed": 0}, "loop": {"rounds": 2}}
    added = {"data": {"shots": 10, "seed": 0, "new_field": 1}, "loop": {"rounds": 2}}
    assert _disagreement(saved, added) is None  # a field added to the config later is no disagreement
    other = {"data": {"shots": 3, "seed": 0}, "loop": {"rounds": 2}}
    assert _disagreement(saved, other).startswith("data.shots")
    with pytest.raises(SystemExit):
        parse_args(["--noise", "gaussian"])
    with pytest.raises(SystemExit):
        parse_args(["--eps", "0,1.5"])
