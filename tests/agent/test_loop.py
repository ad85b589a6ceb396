"""The loop's logic with a scripted generator (fast), and end to end with the real local model."""

import json
import random
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import DataConfig, EmbedConfig, LoopConfig, ReportConfig, RunConfig
from agent.datasets import load
from agent.llm.cache import CachedBackend, LLMCache
from agent.llm.protocol import Result
from agent.loop import (
    _round_robin,
    cap_synthetic,
    compare_arms,
    run_loop,
    synthetic_weights,
)
from agent.runs import Run


class EchoBackend:
    """A scripted generator: continues a list prompt with an edited copy of one of its example lines."""

    name = "scripted"
    model_id = "scripted-echo"

    def __init__(self):
        self.calls = 0

    def check(self):
        pass

    def close(self):
        pass

    def generate(self, requests, on_result=None):
        out = []
        for req in requests:
            text = req.prompt or "\n".join(c for _, c in req.messages or ())
            lines = [m.group(1).strip() for m in re.finditer(r"^\s*(?:\d+[.)]|-)\s*(.+)$", text, re.M)]
            lines = [x for x in lines if len(x) > 8] or ["I need help with my account please"]
            for i in req.sample_indices():
                self.calls += 1
                rng = random.Random(f"{req.id}-{i}")
                pick = rng.choice(lines)
                words = pick.split()
                prefix = rng.choice(["Hey,", "Quick question:", "Hello there,", "Sorry to bother you,"])
                tail = rng.choice(["thanks!", "any idea?", "please advise.", "what should I do?"])
                gen = f" {prefix} {' '.join(words)} {tail}\n"
                r = Result(
                    req.id, i, gen, "stop", prompt_tokens=len(text.split()), completion_tokens=len(words)
                )
                out.append(r)
                if on_result:
                    on_result(req, r)
        return out


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
    run = Run.create(tmp_path / "run", _config(small_files, embed_cache))
    summary = run_loop(run, backend=backend)
    assert summary["rounds"][0]["stage"] == "real-only"
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
    import agent.loop as loop

    real_select = loop.select_weight

    def worse(run, ds, embedder, synthetic):
        w, f1, clf, table = real_select(run, ds, embedder, synthetic)
        return w, (f1 - 0.5 if synthetic else f1), clf, table

    monkeypatch.setattr(loop, "select_weight", worse)
    _, backend = _backend(tmp_path)
    run = Run.create(tmp_path / "run", _config(small_files, embed_cache, rounds=1, robustness=False))
    summary = run_loop(run, backend=backend)
    entry = summary["rounds"][1]
    assert entry["rolled_back"] is True and entry["used"] == 0 and summary["synthetic_used"] == 0
    assert json.loads((run.round_dir(1) / "used.json").read_text())["rolled_back"] is True
    assert (run.round_dir(1) / "accepted.jsonl").read_text().strip()  # the samples are kept on disk


def test_compare_arms_writes_table(tmp_path, small_files, embed_cache):
    _, backend = _backend(tmp_path)
    base = _config(small_files, embed_cache, rounds=1, robustness=False)
    data = compare_arms(tmp_path / "cmp", base, seeds=[0, 1], backend=backend)
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
