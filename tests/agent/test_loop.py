"""The loop's logic with a scripted generator (fast), and end to end with the real local model."""

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activesynth.agent.config import DataConfig, EmbedConfig, LoopConfig, ReportConfig, RunConfig
from activesynth.agent.datasets import load
from activesynth.agent.experiments.arms import compare_arms
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.loop import _round_robin, run_loop
from activesynth.agent.runs import Run
from activesynth.agent.training import cap_synthetic, synthetic_weights
from tests.fakes import EchoBackend


def _config(small_files, embed_cache, **loop):
    return RunConfig(
        data=DataConfig(**small_files, selection_fraction=0.5),
        embed=EmbedConfig(cache_dir=embed_cache),
        report=ReportConfig(n_clusters=3, plots=False),
        loop=LoopConfig(**{"rounds": 2, "budget": 16, "robustness": True, "attack_texts": 10, **loop}),
    )


def _backend(tmp_path):
    fake = EchoBackend()
    return fake, CachedBackend(fake, LLMCache(tmp_path / "llm.sqlite"))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from("abc"), min_size=3, max_size=30).filter(lambda x: len(set(x)) == 3),
    st.lists(st.sampled_from("ab"), max_size=30),
    st.floats(0.05, 2.0),
)
def test_balanced_weights_keep_the_real_prior(real, syn, w):
    weights = synthetic_weights(real, syn, w, balance=True)
    labels = np.array(real + syn)
    assert weights.sum() == pytest.approx(len(real) + w * len(syn))
    for c, n in Counter(real).items():
        assert weights[labels == c].sum() / weights.sum() == pytest.approx(n / len(real))
    unbalanced = synthetic_weights(real, syn, w, balance=False)
    assert np.allclose(unbalanced[len(real) :], w) and np.allclose(unbalanced[: len(real)], 1.0)


def test_cap_and_round_robin():
    recs = [{"label": "a", "i": i} for i in range(10)] + [{"label": "b", "i": i} for i in range(3)]
    assert Counter(r["label"] for r in cap_synthetic(recs, Counter({"a": 2, "b": 2}), 2.0)) == {
        "a": 4,
        "b": 3,
    }
    assert cap_synthetic(recs, Counter({"b": 1}), 1.0) == [recs[10]]  # unknown labels never enter
    rr = _round_robin(recs, 6)
    assert Counter(r["label"] for r in rr) == {"a": 3, "b": 3}


def test_loop_runs_rounds_and_resumes_without_new_calls(tmp_path, small_files, embed_cache):
    fake, backend = _backend(tmp_path)
    run = Run.create(tmp_path / "run", _config(small_files, embed_cache, patience=5))
    summary = run_loop(run, backend=backend)
    assert summary["rounds"][0]["stage"] == "real-only"
    r2 = json.loads((run.round_dir(2) / "generation_record.json").read_text())
    assert r2["cache_hits"] < r2["samples"]  # round 2 asks new questions, not round 1's again
    assert 0 < summary["synthetic_used"] <= 16
    assert fake.calls > 0
    r1 = run.round_dir(1)
    for name in (
        "uncertainty_report.json",
        "generation_plan.json",
        "candidates.jsonl",
        "decisions.jsonl",
        "accepted.jsonl",
        "filter_report.json",
        "metrics.json",
        "used.json",
    ):
        assert (r1 / name).exists(), name
    rob = summary["final"]["robustness"]
    assert set(rob) >= {"typos", "casing", "drop_words", "attack"}
    assert (run.path / "export" / "model" / "classifier.json").exists()
    used = json.loads((run.path / "export" / "synthetic.json").read_text())
    assert all(r["round"] in (1, 2) and r["template_version"] for r in used)  # provenance travels
    calls = fake.calls
    again = run_loop(Run.open(run.path), backend=backend)  # a re-run (resume) repeats no LLM call
    assert fake.calls == calls
    assert again["final"]["test"]["accuracy"] == summary["final"]["test"]["accuracy"]


def test_rollback_keeps_samples_but_does_not_train_on_them(tmp_path, small_files, embed_cache, monkeypatch):
    import activesynth.agent.loop as loop

    real_select = loop.select_weight

    def worse(config, ds, embedder, synthetic, **kw):
        w, f1, clf, table = real_select(config, ds, embedder, synthetic, **kw)
        return w, (f1 - 0.5 if synthetic else f1), clf, table

    monkeypatch.setattr(loop, "select_weight", worse)
    _, backend = _backend(tmp_path)
    cfg = _config(small_files, embed_cache, rounds=1, robustness=False, rollback_confidence=None)  # any drop
    run = Run.create(tmp_path / "run", cfg)
    summary = run_loop(run, backend=backend)
    entry = summary["rounds"][1]
    assert entry["rolled_back"] is True and entry["used"] == 0 and summary["synthetic_used"] == 0
    assert json.loads((run.round_dir(1) / "used.json").read_text())["rolled_back"] is True
    assert (run.round_dir(1) / "accepted.jsonl").read_text().strip()  # the samples are kept on disk


def test_rollback_needs_a_confident_drop(tmp_path, small_files, embed_cache, monkeypatch):
    """A round whose model scores lower on the selection split only by noise is kept; a model that is really
    worse (trained on shuffled labels) is rolled back."""
    import activesynth.agent.loop as loop

    real_select = loop.select_weight
    _, backend = _backend(tmp_path)

    def slightly_lower(config, ds, embedder, synthetic, **kw):  # same predictions, selection F1 0.001 lower
        w, f1, clf, table = real_select(config, ds, embedder, synthetic, **kw)
        return w, (f1 - 0.001 if synthetic else f1), clf, table

    monkeypatch.setattr(loop, "select_weight", slightly_lower)
    run = Run.create(tmp_path / "noise", _config(small_files, embed_cache, rounds=1, robustness=False))
    assert run_loop(run, backend=backend)["rounds"][1]["rolled_back"] is False

    def much_worse(config, ds, embedder, synthetic, **kw):
        w, f1, clf, table = real_select(config, ds, embedder, synthetic, **kw)
        if synthetic:
            from activesynth.agent.classifier import build_classifier

            shuffled = list(reversed(ds.train.labels))
            clf = build_classifier(config.classifier, embedder).fit(ds.train.texts, shuffled)
            f1 = 0.0
        return w, f1, clf, table

    monkeypatch.setattr(loop, "select_weight", much_worse)
    run = Run.create(tmp_path / "worse", _config(small_files, embed_cache, rounds=1, robustness=False))
    assert run_loop(run, backend=backend)["rounds"][1]["rolled_back"] is True


def test_bootstrap_macro_f1_matches_the_metric():
    from activesynth.evaluators.metrics.classification import bootstrap_macro_f1, classification_metrics

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]
    gold = [classes[i] for i in rng.integers(0, 4, 200)]
    pred = rng.integers(0, 4, 200)
    proba = np.eye(4)[pred]
    expected = classification_metrics(gold, proba, classes)["macro_f1"]
    f1 = bootstrap_macro_f1(gold, [pred, pred], classes, n_boot=300, seed=1)
    assert f1.shape == (2, 300) and np.array_equal(f1[0], f1[1])  # paired: same resamples
    assert abs(f1.mean() - expected) < 0.02 and f1.std() > 0
    no_resample = bootstrap_macro_f1(gold, [pred], classes, n_boot=1, seed=0)
    assert 0 <= no_resample[0, 0] <= 1


def _open_handles(*paths) -> int:
    """File descriptors of this process on files under ``paths`` (caches and their -wal/-shm files)."""
    import os

    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sum(t.startswith(str(p.resolve())) for t in targets for p in paths)


def test_compare_arms_writes_table(tmp_path, small_files, embed_cache):
    _, backend = _backend(tmp_path)
    base = _config(small_files, embed_cache, rounds=1, robustness=False)
    compare_arms(tmp_path / "warm", base, seeds=[0], backend=backend)
    after_one_seed = _open_handles(embed_cache, tmp_path)
    data = compare_arms(tmp_path / "cmp", base, seeds=[0, 1], backend=backend)
    # six more arm runs, each with its own embedder and caches: the handles stay flat (issue 11, item 9)
    assert _open_handles(embed_cache, tmp_path) <= after_one_seed
    assert not list((tmp_path / "cmp").glob("seed-*/*/llm_cache.sqlite"))  # one shared cache, one level up
    assert set(data["table"]) == {"real-only", "untargeted", "active"}
    assert len(data["table"]["active"]["accuracy"]["values"]) == 2
    assert "delta_accuracy_vs_real" in data["table"]["active"]
    assert data["table"]["real-only"]["synthetic_used"]["mean"] == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| active |" in md and "| real-only |" in md
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_no_test_text_reaches_a_prompt(tmp_path, small_files, embed_cache):
    fake, backend = _backend(tmp_path)
    seen_prompts = []
    original = fake.generate

    def spy(requests, on_result=None):
        seen_prompts.extend(r.prompt or json.dumps(r.message_dicts()) for r in requests)
        return original(requests, on_result)

    fake.generate = spy
    run = Run.create(tmp_path / "run", _config(small_files, embed_cache, rounds=1, robustness=False))
    run_loop(run, backend=backend)
    test_texts, _ = load(run.config.data).test.reveal("evaluation")
    ds = load(run.config.data)
    shown = set(ds.train.texts) | set(ds.dev.texts)
    assert seen_prompts and any(t in p for p in seen_prompts for t in shown)  # the check can see texts
    leaked = [t for t in test_texts if t not in shown and any(t in p for p in seen_prompts)]
    assert not leaked
    select_only = [t for t in ds.select.texts if t not in shown]
    assert not [t for t in select_only if any(t in p for p in seen_prompts)]  # selection split stays out


_CHILD = """
import sys
from pathlib import Path
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.loop import run_loop
from activesynth.agent.runs import Run
from tests.fakes import EchoBackend

run = Run.open(sys.argv[1])
with run.lock():
    fake = EchoBackend(delay=0.3, log_path=sys.argv[2])
    run_loop(run, backend=CachedBackend(fake, LLMCache(Path(sys.argv[3]))))
"""


@pytest.mark.slow
def test_sigkill_during_generation_then_resume(tmp_path, small_files, embed_cache):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = _config(small_files, embed_cache, rounds=1, robustness=False)
    # the uninterrupted reference
    ref_fake, ref_backend = EchoBackend(), None
    ref_backend = CachedBackend(ref_fake, LLMCache(tmp_path / "ref.sqlite"))
    ref = run_loop(Run.create(tmp_path / "ref", cfg), backend=ref_backend)
    total = ref_fake.calls

    run = Run.create(tmp_path / "killed", cfg)
    log = tmp_path / "calls.log"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(run.path), str(log), str(tmp_path / "k.sqlite")], env=env, cwd=root
    )
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.2)
        assert child.poll() is None, "the child ended before it was killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = len(log.read_text().splitlines())
    assert 5 <= before < total

    fake = EchoBackend(log_path=log)
    resumed = run_loop(Run.open(run.path), backend=CachedBackend(fake, LLMCache(tmp_path / "k.sqlite")))
    assert fake.calls <= total - before + 1  # at most the one sample in flight is asked again
    assert before + fake.calls >= total
    assert resumed["final"]["test"]["accuracy"] == ref["final"]["test"]["accuracy"]
    assert resumed["synthetic_used"] == ref["synthetic_used"]


@pytest.mark.slow
def test_tiny_loop_with_the_real_local_model(tmp_path, small_files, embed_cache):
    cfg = _config(small_files, embed_cache, rounds=1, budget=4, overgenerate=2.0, robustness=False)
    cfg.generate.backend.model = "smollm2"
    cfg.generate.planner.n_texts = 8
    run = Run.create(tmp_path / "real", cfg)
    summary = run_loop(run)
    rec = json.loads((run.round_dir(1) / "generation_record.json").read_text())
    assert rec["samples"] > 0 and rec["usage"]["totals"]["completion_tokens"] > 0
    assert rec["model"].startswith("local:smollm2")
    cands = [json.loads(x) for x in (run.round_dir(1) / "candidates.jsonl").read_text().splitlines()]
    assert any(c["status"] == "parsed" and c["text"].strip() for c in cands)
    decisions = (run.round_dir(1) / "decisions.jsonl").read_text().splitlines()
    assert len(decisions) == len(cands)  # every candidate has its decisions, none dropped silently
    assert summary["synthetic_used"] <= 4
    assert summary["final"]["test"]["accuracy"] > 0.5


def test_chat_controls_reach_the_loop(tmp_path, small_files, embed_cache):
    from activesynth.agent.control import request_stop, set_approval, set_overrides

    _, backend = _backend(tmp_path)
    run = Run.create(
        tmp_path / "gate", _config(small_files, embed_cache, rounds=1, robustness=False, approval_gate=True)
    )
    set_approval(run, 1, False)  # a human rejected round 1's batch
    summary = run_loop(run, backend=backend)
    assert summary["rounds"][1]["used"] == 0 and summary["synthetic_used"] == 0

    run2 = Run.create(tmp_path / "budget", _config(small_files, embed_cache, rounds=1, robustness=False))
    set_overrides(run2, {"loop.budget": 3})  # changed from chat before the round
    assert run_loop(run2, backend=backend)["synthetic_used"] <= 3

    run3 = Run.create(tmp_path / "stop", _config(small_files, embed_cache, rounds=2, robustness=False))
    request_stop(run3)
    s3 = run_loop(run3, backend=backend)
    assert s3["stop_reason"] == "stopped by the user" and s3["synthetic_used"] == 0


def test_later_rounds_overgenerate_by_the_measured_acceptance_rate(tmp_path, small_files, embed_cache):
    from activesynth.agent.loop import ask_for

    run = Run.create(tmp_path / "run", _config(small_files, embed_cache, overgenerate=3.0))
    assert ask_for(run, 1, 50) == (150, None)  # nothing measured yet: the configured factor
    rdir = run.round_dir(1, create=True)
    (rdir / "generation_plan.json").write_text(json.dumps({"n_texts": 150}))
    (rdir / "filter_report.json").write_text(json.dumps({"n_accepted": 15, "n_candidates": 180}))
    ask, rate = ask_for(run, 2, 40)
    assert rate == pytest.approx(0.1)
    assert ask == math.ceil(40 * 10.0)  # 1.15 / 0.1 = 11.5, capped at max_overgenerate = 10
    (rdir / "filter_report.json").write_text(json.dumps({"n_accepted": 75, "n_candidates": 180}))
    assert ask_for(run, 2, 40)[0] == 40 * 3  # a high rate never asks for less than overgenerate ×
    (rdir / "filter_report.json").write_text(json.dumps({"n_accepted": 30, "n_candidates": 180}))
    assert ask_for(run, 2, 40)[0] == math.ceil(40 * 1.15 / 0.2)
    run.config.loop.adaptive_overgenerate = False
    assert ask_for(run, 2, 40)[0] == 120
