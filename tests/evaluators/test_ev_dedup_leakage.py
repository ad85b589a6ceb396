"""Embedding dedup and the leakage guard, with the real MiniLM model and real FAISS."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from activesynth.agent.datasets import SealedSplit
from activesynth.evaluators.base import Candidate, FilterContext, Verdict
from activesynth.evaluators.dedup import EmbeddingDedup
from activesynth.evaluators.leakage import LeakageGuard
from activesynth.evaluators.vectors import CosineIndex, greedy_dedup

pytestmark = pytest.mark.slow


def cands(texts, label="card_arrival"):
    return [Candidate(f"c{i}", t, label) for i, t in enumerate(texts)]


def test_dedup_paraphrase_identical_and_distinct(embedder):
    ctx = FilterContext(real_texts=["My new card has not arrived yet."], embedder=embedder)
    texts = [
        "My new card hasn't arrived yet.",  # near-copy of the real text
        "What is the exchange rate for dollars today?",
        "What is the exchange rate for dollars today?",  # same as the previous candidate
        "Can I get cash out at any ATM for free?",
    ]
    out = EmbeddingDedup(max_cosine=0.95).judge(cands(texts), ctx)
    assert [d.verdict for d in out] == [Verdict.DROP, Verdict.KEEP, Verdict.DROP, Verdict.KEEP]
    assert "real training text #0" in out[0].reason
    assert "candidate c1 of this batch" in out[2].reason
    assert out[2].score == pytest.approx(1.0, abs=1e-5)
    assert out[1].score < 0.95


def test_dedup_edges(embedder):
    ctx = FilterContext(embedder=embedder)
    texts = ["", "", "Как отправить деньги?", "Как отправить деньги?", "x " * 2000]
    out = EmbeddingDedup().judge(cands(texts), ctx)
    assert [d.verdict for d in out] == [Verdict.KEEP, Verdict.DROP, Verdict.KEEP, Verdict.DROP, Verdict.KEEP]
    assert out[0].score is None  # nothing to compare with: no reference texts
    assert EmbeddingDedup().judge([], ctx) == []
    with pytest.raises(ValueError, match="embedder"):
        EmbeddingDedup().judge(cands(["hi"]), FilterContext())


def test_greedy_dedup_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16))
    vecs = np.concatenate([base, base[:20] + 0.05 * rng.normal(size=(20, 16))])[rng.permutation(50)]
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    refs = vecs[:5] + 0.01
    refs = (refs / np.linalg.norm(refs, axis=1, keepdims=True)).astype(np.float32)
    eligible = [i % 7 != 3 for i in range(50)]
    kept, best, _ = greedy_dedup(vecs, CosineIndex(16, refs), 0.9, eligible, block=8)
    pool, expect = list(refs), []
    for i, v in enumerate(vecs):
        ok = max(float(p @ v) for p in pool) <= 0.9
        expect.append(ok)
        if ok and eligible[i]:
            pool.append(v)
    assert kept.tolist() == expect and 0 < sum(expect) < 50


SECRET = [
    "Zebra-striped card please, how long does delivery take to Lisbon?",
    "Why does the app say my top-up from Saturday failed twice?",
]


def test_leakage_guard_drops_near_test_without_revealing(embedder, caplog, tmp_path):
    sealed = SealedSplit(SECRET, ["card_arrival", "top_up_failed"], source="test")
    texts = [
        "Zebra-striped card please, how long will delivery take to Lisbon?",  # near test text 0
        "why did the app say my top up from saturday failed twice",  # near test text 1
        "How do I change my PIN?",
    ]
    caplog.set_level(logging.DEBUG)
    ctx = FilterContext(embedder=embedder, test=sealed)
    guard = LeakageGuard()
    out = guard.judge(cands(texts), ctx)
    assert [d.verdict for d in out] == [Verdict.DROP, Verdict.DROP, Verdict.KEEP]
    assert out[0].code == "near_test" and out[0].reason.startswith(
        "near_test: near a held-out test text (rougeL="
    )
    dumped = json.dumps([d.to_dict() for d in out]) + caplog.text + repr(guard) + repr(ctx)
    for secret in SECRET:
        for fragment in ("Zebra", "Lisbon", "Saturday", secret):
            assert fragment not in dumped
    public = {k: v for k, v in vars(guard).items() if not k.startswith("_LeakageGuard__")}
    assert "Lisbon" not in repr(public)  # test texts live only in name-mangled private attributes


def test_leakage_guard_cosine_only_catches_paraphrase(embedder):
    sealed = SealedSplit(["I lost my card, what should I do?"], ["lost_or_stolen_card"])
    text = "What should I do? I lost my card."  # word order changed: low ROUGE-L, high cosine
    out = LeakageGuard(max_rouge=0.7, max_cosine=0.9).judge(
        cands([text]), FilterContext(embedder=embedder, test=sealed)
    )
    assert out[0].verdict == Verdict.DROP and "cosine=" in out[0].reason
    no_emb = LeakageGuard(max_rouge=0.7, max_cosine=0.9).judge(cands([text]), FilterContext(test=sealed))
    assert no_emb[0].verdict == Verdict.KEEP and "rougeL below" in no_emb[0].reason


def test_leakage_guard_without_test_split():
    out = LeakageGuard().judge(cands(["How do I change my PIN?"]), FilterContext())
    assert out[0].verdict == Verdict.KEEP and out[0].code == "not_checked"
