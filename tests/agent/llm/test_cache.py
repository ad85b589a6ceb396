"""The SQLite call cache: keys, WAL, resume, and the cached wrapper's accounting."""

from __future__ import annotations

import contextlib
import sqlite3

from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.protocol import GenerationRequest, Result, SamplingParams
from activesynth.agent.llm.usage import Price, PriceTable, UsageMeter
from tests.fakes import ScriptedBackend


def counting_backend(fail_after: int | None = None, errors: set[int] = frozenset()) -> ScriptedBackend:
    """Answers ``<request id>-<sample>`` (or an error for the sample indices in ``errors``)."""

    def answer(req, i, n_call):
        err = "boom" if i in errors else None
        return Result(
            req.id,
            i,
            text="" if err else f"{req.id}-{i}",
            prompt_tokens=3,
            completion_tokens=2,
            error=err,
            finish_reason="stop",
        )

    return ScriptedBackend(answer, "scripted:model", fail_after=fail_after)


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
    backend = counting_backend()
    meter = UsageMeter()
    cb = CachedBackend(backend, cache, meter)
    first = cb.generate([req("a"), req("b", n=2)])
    assert len(backend.asked) == 5 and [r.text for r in first][:2] == ["a-0", "a-1"]
    second = cb.generate([req("a"), req("b", n=2)])
    assert len(backend.asked) == 5
    assert all(r.cached for r in second) and [r.text for r in second] == [r.text for r in first]
    totals = meter.summary()["totals"]
    assert totals["calls"] == 5 and totals["cache_hits"] == 5
    assert totals["prompt_tokens"] == 15 and totals["completion_tokens"] == 10


def test_more_samples_reuse_the_cached_ones(tmp_path):
    cb = CachedBackend(backend := counting_backend(), LLMCache(tmp_path / "c.sqlite"))
    cb.generate([req("a", n=2)])
    cb.generate([req("a", n=4)])
    assert backend.asked == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]


def test_killed_generation_resumes_from_the_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    killed = counting_backend(fail_after=3)
    with contextlib.suppress(KeyboardInterrupt):
        CachedBackend(killed, LLMCache(path)).generate([req("a"), req("b")])
    assert len(killed.asked) == 3
    resumed = counting_backend()
    out = CachedBackend(resumed, LLMCache(path)).generate([req("a"), req("b")])
    assert resumed.asked == [("b", 0), ("b", 1), ("b", 2)]
    assert [r.cached for r in out] == [True] * 3 + [False] * 3


def test_failures_are_not_cached_and_are_retried_next_time(tmp_path):
    path = tmp_path / "c.sqlite"
    meter = UsageMeter()
    out = CachedBackend(counting_backend(errors={1}), LLMCache(path), meter).generate([req("a")])
    assert [r.ok for r in out] == [True, False, True]
    assert meter.summary()["totals"]["failures"] == 1
    again = counting_backend()
    CachedBackend(again, LLMCache(path)).generate([req("a")])
    assert again.asked == [("a", 1)]


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


def _fds_on(path) -> int:
    """Open file descriptors of this process on ``path`` and its ``-wal``/``-shm`` companions."""
    import os

    base = str(path.resolve())
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        n += target.startswith(base)
    return n


def test_many_caches_on_one_file_hold_one_connection(tmp_path):
    """A compare run builds an LLMCache per arm and round: the open handles must stay flat."""
    path = tmp_path / "llm_cache.sqlite"
    first = LLMCache(path)
    CachedBackend(counting_backend(), first).generate([req("warm")])
    after_one = _fds_on(path)
    assert after_one >= 1
    caches = []
    for i in range(25):  # never closed, as a run that forgets to close them
        c = LLMCache(tmp_path / "." / "llm_cache.sqlite")  # another spelling of the same file
        CachedBackend(counting_backend(), c).generate([req(f"arm{i}")])
        assert c.get(req(f"arm{i}").cache_key("scripted:model", 0)) is not None
        caches.append(c)
    assert _fds_on(path) == after_one
    assert len(caches[-1]) == 26 * 3
    for c in [first, *caches]:
        c.close()
    assert _fds_on(path) == 0  # the last user's close closes the file


def test_closed_cache_is_reopened_by_a_new_object(tmp_path):
    path = tmp_path / "c.sqlite"
    a = LLMCache(path)
    a.put("k", "m", {"text": "x"})
    a.close()
    b = LLMCache(path)
    assert b.get("k") == {"text": "x"}
    b.close()


def test_cache_file_is_created_only_when_something_is_stored(tmp_path):
    path = tmp_path / "arm" / "llm_cache.sqlite"
    cache = LLMCache(path)
    assert cache.get("k") is None and len(cache) == 0
    assert not path.exists() and not path.parent.exists()  # an unused cache leaves nothing behind
    cache.put("k", "m", {"text": "x"})
    assert path.exists() and cache.get("k") == {"text": "x"}
    other = LLMCache(path)  # a reader of an existing file sees its rows
    assert len(other) == 1


def test_a_forked_child_opens_its_own_connection(tmp_path):
    """A connection must not cross a fork: the child opens its own, the parent's keeps working."""
    import os

    from activesynth.agent import sqlite_pool

    path = tmp_path / "c.sqlite"
    cache = LLMCache(path)
    cache.put("parent", "m", {"text": "p"})
    parent_conn = cache._conn
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 1
        try:
            cache.put("child", "m", {"text": "c"})
            fresh = LLMCache(path)
            ok = (
                fresh.get("parent") == {"text": "p"}
                and cache._conn is not parent_conn
                and fresh._conn is cache._conn
                and cache._conn.pid == os.getpid()
            )
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache._conn is parent_conn and cache.get("child") == {"text": "c"}
    cache.put("parent2", "m", {"text": "p2"})
    assert len(cache) == 3
    assert sqlite_pool.open_connections()[path.resolve()] >= 1


def test_close_all_closes_every_connection_and_caches_reopen(tmp_path):
    """What runs at interpreter exit: no handle stays open; a cache used afterwards opens the file again."""
    from activesynth.agent import sqlite_pool

    path = tmp_path / "c.sqlite"
    cache = LLMCache(path)
    cache.put("k", "m", {"text": "x"})
    assert _fds_on(path) >= 1 and path.resolve() in sqlite_pool.open_connections()
    sqlite_pool.close_all()
    assert _fds_on(path) == 0 and path.resolve() not in sqlite_pool.open_connections()
    assert cache.get("k") == {"text": "x"}
