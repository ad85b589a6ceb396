"""The openai backend: fault injection on loopback, fail-fast errors, secrets, throttle, a real server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from activesynth.agent.llm import BackendError, OpenAIConfig
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.openai import OpenAIBackend, _Throttle
from activesynth.agent.llm.protocol import GenerationRequest, SamplingParams
from activesynth.agent.llm.usage import UsageMeter

SECRET = "sk-test-0123456789abcdef-SECRET"


def backend(url, **kw):
    cfg = dict(
        model="fake-model", base_url=url, timeout_s=0.5, max_retries=2, output_retries=2, backoff_s=0.01
    )
    cfg.update(kw)
    return OpenAIBackend(OpenAIConfig(**cfg))


def completion(rid="r1", n=1, **sampling):
    return GenerationRequest(
        id=rid,
        mode="completion",
        prompt="Bank messages:\n1.",
        n=n,
        sampling=SamplingParams(max_tokens=8, **sampling),
        template="t",
        template_version="v",
    )


@pytest.mark.parametrize(
    "script",
    [["429"], ["500"], ["500", "429"], ["timeout"], ["drop"], ["malformed"], ["empty"]],
)
def test_transient_faults_are_retried(fault_server, script):
    with fault_server(script, delay=1.5) as srv:
        [res] = backend(srv.url).generate([completion()])
        assert res.ok and res.text.startswith(" synthetic text")
        assert [r["action"] for r in srv.requests] == script + ["ok"]


def test_exhausted_retries_are_recorded_and_the_run_goes_on(fault_server):
    # the first request always fails; the other one succeeds
    with fault_server(["500"] * 3 + ["malformed"] * 3 + ["500"] * 3) as srv:
        be = backend(srv.url, max_concurrency=1)
        results = be.generate([completion("bad"), completion("good")])
        by_id = {r.request_id: r for r in results}
        bad = by_id["bad"]
        assert not bad.ok and ("HTTP 500" in bad.error or "malformed" in bad.error)
        assert by_id["good"].ok


def test_n_samples_and_extra_body_pass_through(fault_server):
    with fault_server() as srv:
        be = backend(srv.url, extra_body={"top_k": 5, "guided_regex": "[a-z ]+"})
        results = be.generate([completion(n=3, stop=["\n"])])
        assert [r.sample_index for r in results] == [0, 1, 2] and all(r.ok for r in results)
        body = srv.requests[0]["body"]
        assert body["n"] == 3 and body["top_k"] == 5 and body["guided_regex"] == "[a-z ]+"
        assert body["stop"] == ["\n"] and body["max_tokens"] == 8 and body["model"] == "fake-model"
        assert sum(r.completion_tokens for r in results) == 15 and sum(r.prompt_tokens for r in results) == 7


def test_chat_endpoint(fault_server):
    with fault_server() as srv:
        req = GenerationRequest(id="c", mode="chat", messages=(("system", "s"), ("user", "u")), n=2)
        results = backend(srv.url).generate([req])
        assert all(r.ok for r in results)
        assert srv.requests[0]["path"].endswith("/chat/completions")
        assert srv.requests[0]["body"]["messages"] == [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
        ]


def test_server_that_ignores_n_is_asked_one_sample_at_a_time(fault_server, monkeypatch):
    with fault_server() as srv:
        be = backend(srv.url)
        original = be._call_group

        async def one_choice(client, throttle, req, indices):  # emulate llama.cpp: one choice whatever n is
            class Wrap:
                def __init__(self, c):
                    self.c = c
                    self.completions = self

                async def create(self, **kw):
                    resp = await self.c.completions.create(**kw)
                    resp.choices = resp.choices[:1]
                    return resp

            return await original(Wrap(client), throttle, req, indices)

        monkeypatch.setattr(be, "_call_group", one_choice)
        results = be.generate([completion(n=3)])
        assert all(r.ok for r in results) and len({r.text for r in results}) == 3
        assert be._n_ignored


def test_wrong_key_fails_fast_with_one_line(fault_server, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("MY_KEY", "wrong-" + SECRET)
    caplog.set_level(logging.DEBUG)
    with fault_server(key=SECRET) as srv:
        be = backend(srv.url, api_key_env="MY_KEY")
        with pytest.raises(BackendError) as err:
            be.generate([completion()])
        msg = str(err.value)
        assert "\n" not in msg and "authentication failed" in msg and "$MY_KEY" in msg
        assert SECRET not in msg and srv.posts == 0  # no work started
    assert SECRET not in caplog.text and SECRET not in repr(be)


def test_right_key_from_env_only_and_never_stored(fault_server, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("MY_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with fault_server(key=SECRET) as srv:
        be = backend(srv.url, api_key_env="MY_KEY")
        assert SECRET not in OpenAIConfig(model="m", api_key_env="MY_KEY").model_dump_json()
        cached = CachedBackend(be, LLMCache(tmp_path / "c.sqlite"), UsageMeter())
        out = cached.generate([completion(n=2)])
        assert all(r.ok for r in out) and srv.requests[-1]["auth"] == f"Bearer {SECRET}"
        UsageMeter().save(tmp_path / "usage.json")
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in caplog.text


def test_missing_key_for_a_remote_server_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(BackendError, match="set the environment variable NOPE_KEY"):
        OpenAIBackend(
            OpenAIConfig(model="m", base_url="https://api.example.invalid/v1", api_key_env="NOPE_KEY")
        )


def test_named_key_variable_that_is_unset_fails_before_any_work(fault_server, monkeypatch):
    """--api-key-env X on loopback with X unset: one line, no request (it used to send a placeholder)."""
    monkeypatch.delenv("UNSET_LLM_KEY", raising=False)
    with fault_server() as srv:
        with pytest.raises(BackendError) as err:
            backend(srv.url, api_key_env="UNSET_LLM_KEY").generate([completion()])
        assert "UNSET_LLM_KEY" in str(err.value) and "\n" not in str(err.value)
        assert srv.posts == 0 and srv.gets == []


def test_default_key_variable_unset_on_loopback_says_no_key_is_sent(fault_server, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="activesynth.agent.llm.openai")
    with fault_server() as srv:
        be = backend(srv.url)
        backend(srv.url)  # said once per server, not per backend
        [res] = be.generate([completion()])
        assert res.ok
        told = [r.getMessage() for r in caplog.records if "no API key is sent" in r.getMessage()]
        assert len(told) == 1 and "OPENAI_API_KEY" in told[0] and "'no-key'" in told[0]
        # what goes over the wire is that obvious non-secret, nothing that looks like a key
        assert {r["auth"] for r in srv.requests} == {"Bearer no-key"}


def test_models_preflight_is_retried(fault_server):
    """One dropped connection on GET /models must not abort generate (dropped links are retried)."""
    with fault_server(get_script=["drop"]) as srv:
        [res] = backend(srv.url).generate([completion()])
        assert res.ok
        assert [g["action"] for g in srv.gets] == ["drop", "ok"]
    with fault_server(get_script=["drop"] * 3) as srv:  # retries exhausted: still one clear line
        with pytest.raises(BackendError, match="cannot reach"):
            backend(srv.url, max_retries=2).check()
        assert len(srv.gets) == 3 and srv.posts == 0


def test_usage_counts_transport_retries_apart_from_calls(fault_server, tmp_path):
    """usage.json adds up: requests the server saw == calls + transport retries."""
    # r1: 429, drop (SDK retries), then an empty answer (our retry) -> 500 (SDK retry) -> ok; r2, r3: ok
    with fault_server(["429", "drop", "empty", "500"]) as srv:
        meter = UsageMeter()
        cached = CachedBackend(backend(srv.url, max_concurrency=1), LLMCache(tmp_path / "c.sqlite"), meter)
        out = cached.generate([completion("r1"), completion("r2"), completion("r3")])
        assert all(r.ok for r in out)
        saved = meter.save(tmp_path / "usage.json")
        t = saved["totals"]
        assert srv.posts == 7
        assert t["requests"] == srv.posts and t["calls"] == 4
        assert t["transport_retries"] == 3 and t["calls"] + t["transport_retries"] == t["requests"]
        assert t["output_retries"] == 1 and t["failures"] == 0
        # a round's file accumulates and the run's merge keeps the new counters
        meter.accumulate(tmp_path / "round-01" / "usage.json")
        again = meter.accumulate(tmp_path / "round-01" / "usage.json")
        assert again["totals"]["requests"] == 14 and again["totals"]["transport_retries"] == 6
        merged = UsageMeter.merge_files([tmp_path / "round-01" / "usage.json"], tmp_path / "run-usage.json")
        assert merged["totals"]["requests"] == 14 and merged["totals"]["calls"] == 8


def test_usage_files_saved_before_requests_were_counted_still_add_up(tmp_path):
    import json

    old = {"currency": "USD", "rows": [{"stage": "generate", "model": "m", "calls": 5, "failures": 1}]}
    (tmp_path / "usage.json").write_text(json.dumps(old))
    meter = UsageMeter()
    meter.record("generate", "m", calls=2, requests=3)
    t = meter.accumulate(tmp_path / "usage.json")["totals"]
    assert (t["calls"], t["requests"], t["transport_retries"], t["failures"]) == (7, 8, 1, 1)
    merged = UsageMeter.merge_files([tmp_path / "usage.json", tmp_path / "usage.json"], tmp_path / "m.json")
    assert merged["totals"]["requests"] == 16


def test_retried_empty_answers_leave_a_warning_with_counts(fault_server, caplog):
    caplog.set_level(logging.WARNING, logger="activesynth.agent.llm.openai")
    # "lost": empty three times (1 + output_retries=2); "back": empty once, then an answer
    with fault_server(["empty"] * 4) as srv:
        out = backend(srv.url, max_concurrency=1).generate([completion("lost"), completion("back")])
        by_id = {r.request_id: r for r in out}
        assert not by_id["lost"].ok and by_id["lost"].error == "empty output" and by_id["back"].ok
    [warning] = [r.getMessage() for r in caplog.records if "empty answers" in r.getMessage()]
    assert "4 empty answers (2 samples) from 2 requests" in warning
    assert "1 samples recovered" in warning and "1 still empty after 2 extra tries" in warning


def test_context_size_is_unknown_unless_configured(fault_server, tmp_path):
    with fault_server() as srv:
        be = backend(srv.url)
        assert be.context_size is None and be.count_tokens("hello") is None
        sized = CachedBackend(backend(srv.url, context_size=8192), LLMCache(tmp_path / "c.sqlite"))
        assert sized.context_size == 8192 and sized.count_request_tokens(completion()) is None
    with pytest.raises(ValueError):
        OpenAIConfig(model="m", context_size=0)


def test_unreachable_server_is_a_one_line_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = backend(f"http://127.0.0.1:{port}/v1")
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach") as err:
        be.check()
    assert "\n" not in str(err.value) and time.monotonic() - t0 < 20


def test_rpm_throttle_waits():
    async def go():
        th = _Throttle(rpm=2, tpm=None)
        await th.wait(1)
        await th.wait(1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(th.wait(1), 0.2)
        th2 = _Throttle(rpm=None, tpm=100)
        await th2.wait(80)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(th2.wait(30), 0.2)

    asyncio.run(go())


def test_concurrency_is_bounded(fault_server):
    with fault_server(["timeout"] * 6, delay=0.3) as srv:
        be = backend(srv.url, max_concurrency=2, timeout_s=5)
        t0 = time.monotonic()
        results = be.generate([completion(f"r{i}") for i in range(6)])
        took = time.monotonic() - t0
        assert all(r.ok for r in results)
        assert took >= 0.85  # 6 slow answers, 2 at a time: at least 3 x 0.3 s


@pytest.mark.slow
def test_real_llama_cpp_server(llama_server, tmp_path):
    """The backend against llama-cpp-python's OpenAI-compatible server on loopback (SmolLM2)."""
    be = OpenAIBackend(OpenAIConfig(model="smollm2", base_url=llama_server, timeout_s=60))
    be.check()
    meter = UsageMeter()
    cached = CachedBackend(be, LLMCache(tmp_path / "c.sqlite"), meter)
    reqs = [
        completion("a", n=2),
        GenerationRequest(
            id="b",
            mode="chat",
            messages=(("user", "Write one short message to a bank."),),
            n=1,
            sampling=SamplingParams(max_tokens=8),
        ),
    ]
    first = cached.generate(reqs)
    assert all(r.ok and r.text for r in first) and len(first) == 3
    totals = meter.summary()["totals"]
    assert totals["completion_tokens"] > 0 and totals["prompt_tokens"] > 0 and totals["cache_hits"] == 0
    # every HTTP request is counted by the client's hook: a healthy server needs no transport retry
    assert totals["requests"] == totals["calls"] >= 2 and totals["transport_retries"] == 0
    calls = totals["calls"]
    second = cached.generate(reqs)
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)
    assert meter.summary()["totals"]["calls"] == calls  # zero new calls
