"""The SQLite call cache: keys, WAL, resume, and the cached wrapper's accounting."""

from __future__ import annotations

import contextlib
import sqlite3

from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.protocol import GenerationRequest, Result, SamplingParams
from activesynth.agent.llm.usage import Price, PriceTable, UsageMeter


class CountingBackend:
    """A scripted backend (for cache mechanics only; real backends are tested elsewhere)."""

    name = "scripted"
    model_id = "scripted:model"

    def __init__(self, fail_after: int | None = None, errors: set[int] = frozenset()):
        self.calls: list[tuple[str, int]] = []
        self.fail_after = fail_after
        self.errors = errors

    def check(self):
        pass

    def close(self):
        pass

    def generate(self, requests, on_result=None):
        out = []
        for req in requests:
            for i in req.sample_indices():
                if self.fail_after is not None and len(self.calls) >= self.fail_after:
                    raise KeyboardInterrupt("killed")
                self.calls.append((req.id, i))
                err = "boom" if i in self.errors else None
                res = Result(
                    req.id,
                    i,
                    text="" if err else f"{req.id}-{i}",
                    prompt_tokens=3,
                    completion_tokens=2,
                    error=err,
                    finish_reason="stop",
                )
                out.append(res)
                if on_result:
                    on_result(req, res)
        return out


def req(rid="r", n=3, version="v1", **sampling):
    return GenerationRequest(
        id=rid,
        mode="completion",
        prompt="p " + rid,
        n=n,
        template="t",
        template_version=version,
        sampling=SamplingParams(**sampling),
    )


def test_key_covers_model_prompt_sampling_version_and_sample_index():
    base = req()
    k = base.cache_key("m", 0)
    assert k == req().cache_key("m", 0)
    assert k != base.cache_key("m", 1)
    assert k != base.cache_key("other", 0)
    assert k != req(version="v2").cache_key("m", 0)
    assert k != req(temperature=0.3).cache_key("m", 0)
    assert k != GenerationRequest(
        id="r", mode="completion", prompt="p x", n=3, template="t", template_version="v1"
    ).cache_key("m", 0)
    material = base.canonical("m", 0)
    assert set(material) == {
        "model",
        "mode",
        "prompt",
        "messages",
        "sampling",
        "template_version",
        "sample_index",
    }


def test_rerun_makes_zero_new_calls(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    backend = CountingBackend()
    meter = UsageMeter()
    cb = CachedBackend(backend, cache, meter)
    first = cb.generate([req("a"), req("b", n=2)])
    assert len(backend.calls) == 5 and [r.text for r in first][:2] == ["a-0", "a-1"]
    second = cb.generate([req("a"), req("b", n=2)])
    assert len(backend.calls) == 5
    assert all(r.cached for r in second) and [r.text for r in second] == [r.text for r in first]
    totals = meter.summary()["totals"]
    assert totals["calls"] == 5 and totals["cache_hits"] == 5
    assert totals["prompt_tokens"] == 15 and totals["completion_tokens"] == 10


def test_more_samples_reuse_the_cached_ones(tmp_path):
    cb = CachedBackend(backend := CountingBackend(), LLMCache(tmp_path / "c.sqlite"))
    cb.generate([req("a", n=2)])
    cb.generate([req("a", n=4)])
    assert backend.calls == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]


def test_killed_generation_resumes_from_the_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    killed = CountingBackend(fail_after=3)
    with contextlib.suppress(KeyboardInterrupt):
        CachedBackend(killed, LLMCache(path)).generate([req("a"), req("b")])
    assert len(killed.calls) == 3
    resumed = CountingBackend()
    out = CachedBackend(resumed, LLMCache(path)).generate([req("a"), req("b")])
    assert resumed.calls == [("b", 0), ("b", 1), ("b", 2)]
    assert [r.cached for r in out] == [True] * 3 + [False] * 3


def test_failures_are_not_cached_and_are_retried_next_time(tmp_path):
    path = tmp_path / "c.sqlite"
    meter = UsageMeter()
    out = CachedBackend(CountingBackend(errors={1}), LLMCache(path), meter).generate([req("a")])
    assert [r.ok for r in out] == [True, False, True]
    assert meter.summary()["totals"]["failures"] == 1
    again = CountingBackend()
    CachedBackend(again, LLMCache(path)).generate([req("a")])
    assert again.calls == [("a", 1)]


def test_cache_is_sqlite_wal_with_json_values(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = LLMCache(path)
    cache.put("k", "m", {"text": "héllo", "finish_reason": "stop"})
    assert cache.get("k")["text"] == "héllo" and cache.get("missing") is None and len(cache) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT json_extract(value, '$.text') FROM calls").fetchone()[0] == "héllo"


def test_usage_cost_from_a_price_table(tmp_path):
    prices = PriceTable(models={"gpt-x": Price(prompt_per_mtok=1.0, completion_per_mtok=4.0)})
    meter = UsageMeter(prices)
    meter.record(
        "generate",
        "openai:https://api.example/v1/gpt-x",
        calls=2,
        prompt_tokens=1_000_000,
        completion_tokens=500_000,
    )
    meter.record("compare:a", "local:smollm2", calls=1, prompt_tokens=10)
    s = meter.summary()
    costs = {r["stage"]: r["cost"] for r in s["rows"]}
    assert costs == {"generate": 3.0, "compare:a": None}
    assert s["totals"]["cost"] == 3.0 and s["totals"]["calls"] == 3
    a = meter.save(tmp_path / "round-01" / "usage.json")
    meter.save(tmp_path / "round-02" / "usage.json")
    merged = UsageMeter.merge_files(
        [tmp_path / "round-01" / "usage.json", tmp_path / "round-02" / "usage.json"], tmp_path / "usage.json"
    )
    assert merged["totals"]["calls"] == 2 * a["totals"]["calls"]
    assert merged["totals"]["cost"] == 6.0
