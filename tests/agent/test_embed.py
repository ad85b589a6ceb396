import importlib.util

import numpy as np
import pytest

from activesynth.agent.embed import Embedder, bf16_supported, resolve_model_path
from tests.conftest import SMALL_LABELS, banking_slice


def test_resolves_bundled_model_to_a_folder():
    import os

    path = resolve_model_path("all-MiniLM-L6-v2")
    assert os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))
    assert resolve_model_path(path) == path  # a local folder is used as is
    assert resolve_model_path("someone/some-model") == "someone/some-model"  # a hub id is left to the loader


def test_encode_normalized_and_cached(tmp_path):
    texts = ["How do I top up my card?", "Where is my new card?", "How do I top up my card?"]
    e = Embedder(cache_dir=tmp_path, precision="fp32")
    v = e.encode(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v[0], v[2])
    assert e.computed == 2  # duplicates are computed once
    assert float(v[0] @ v[1]) < 0.9
    e2 = Embedder(cache_dir=tmp_path, precision="fp32")  # a new process would see the same cache
    v2 = e2.encode(texts[::-1])
    assert e2.computed == 0 and e2.cache_hits == 3
    np.testing.assert_array_equal(v2, v[::-1])
    assert e2._model is None  # nothing was loaded: every vector came from disk


def test_empty_input():
    e = Embedder(cache_dir=False, precision="fp32")
    assert e.encode([]).shape == (0, 384)


@pytest.mark.skipif(not bf16_supported(), reason="CPU has no bf16 units")
def test_bf16_matches_fp32_on_real_texts():
    texts = [r["text"] for r in banking_slice("dev", ["card_arrival", "top_up_failed", "exchange_rate"], 20)]
    a = Embedder(cache_dir=False, precision="fp32").encode(texts)
    b = Embedder(cache_dir=False, precision="bf16").encode(texts)
    cos = (a * b).sum(axis=1)
    assert cos.min() >= 0.99, cos.min()


def test_uncached_sibling_shares_the_model_and_skips_the_disk(tmp_path):
    e = Embedder(cache_dir=tmp_path, precision="fp32")
    v = e.encode(["Where is my card?"])
    plain = e.uncached()
    assert plain._model is e._model  # no second model load
    np.testing.assert_allclose(plain.encode(["Where is my card?"]), v, atol=1e-6)
    plain.encode(["a perturbed text that must not be cached"])
    e2 = Embedder(cache_dir=tmp_path, precision="fp32")
    e2.encode(["a perturbed text that must not be cached"])
    assert e2.computed == 1  # the sibling wrote nothing to the shared cache


def _fds_on(path) -> int:
    """Open file descriptors of this process on ``path`` and its ``-wal``/``-shm`` companions."""
    import os

    base = str(path.resolve())
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(base)
    return n


def test_many_embedders_on_one_cache_hold_one_connection(tmp_path):
    """A run builds an Embedder per stage, arm and round: handles on the cache file must stay flat."""
    base = Embedder(cache_dir=tmp_path, precision="fp32")
    base.encode(["Where is my new card?"])
    db = tmp_path / "embeddings.sqlite"
    after_one = _fds_on(db)
    assert after_one >= 1
    for i in range(20):
        e = Embedder(cache_dir=tmp_path, precision="fp32")
        e._model, e._dim = base._model, base._dim  # share the loaded model; the cache is what is tested
        e.encode(["Where is my new card?", f"Card number {i} has not arrived."])
        assert e.cache_hits == 1 and e.computed == 1
    assert _fds_on(db) == after_one


# -- backends and progress (issue 14) ------------------------------------------------------------------------


def _real_texts(n_per_label: int = 7) -> list[str]:
    """About 50 real BANKING77 texts of varied lengths (short and long share batches: padding matters)."""
    return [r["text"] for r in banking_slice("test", SMALL_LABELS[:7], n_per_label)] + [
        "card",
        "Why is there still a pending transaction on my account from the cash withdrawal I made abroad "
        "at an ATM two weeks ago, and when will the money be returned to my balance?",
    ]


@pytest.fixture(scope="module")
def fp32_torch_vectors():
    texts = _real_texts()
    e = Embedder(cache_dir=False, precision="fp32", backend="torch")
    return texts, e.encode(texts)


def test_backend_resolution(monkeypatch):
    from activesynth.agent.embed import BACKEND_ENV, resolve_backend

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("ONNX") == "onnx"
    assert resolve_backend() == ("openvino" if importlib.util.find_spec("openvino") else "torch")
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend() == "torch" and resolve_backend("openvino") == "openvino"  # argument wins
    with pytest.raises(ValueError):
        resolve_backend("tensorrt")
    assert Embedder(cache_dir=False, backend="openvino", device="cuda").backend == "torch"


def test_cache_key_names_the_backend():
    """torch keys are those of earlier releases (existing caches stay valid); other backends get their own."""
    torch_e = Embedder(cache_dir=False, precision="fp32", backend="torch")
    ov_e = Embedder(cache_dir=False, precision="fp32", backend="openvino")
    onnx_e = Embedder(cache_dir=False, precision="bf16", backend="onnx")
    assert torch_e.model_id == "all-MiniLM-L6-v2|fp32"
    assert ov_e.model_id == "all-MiniLM-L6-v2|fp32|openvino"
    assert onnx_e.model_id == "all-MiniLM-L6-v2|fp32|onnx"  # ONNX Runtime runs fp32 whatever was asked
    assert len({torch_e.key("x"), ov_e.key("x"), onnx_e.key("x")}) == 3


def test_export_folder_is_keyed_by_folder_and_versions(tmp_path, monkeypatch):
    from activesynth.agent import embed

    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(tmp_path))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    a = embed._export_dir(str(folder), "openvino")
    assert a.parent == tmp_path / "embed-models" and a == embed._export_dir(str(folder), "openvino")
    assert a != embed._export_dir(str(folder), "onnx")
    real = embed._versions
    monkeypatch.setattr(embed, "_versions", lambda *m: {**real(*m), "openvino": "0.0-other"})
    assert embed._export_dir(str(folder), "openvino") != a  # another library version: another export
    monkeypatch.setattr(embed, "_versions", real)
    (folder / "model.safetensors").write_bytes(b"retrained weights")
    assert embed._export_dir(str(folder), "openvino") != a  # other weights: another export


def test_publish_is_atomic_and_keeps_the_first_copy(tmp_path):
    from activesynth.agent.embed import _publish

    final = tmp_path / "export"
    for i in range(2):  # two writers finish the same export
        tmp = tmp_path / f".tmp-{i}"
        tmp.mkdir()
        (tmp / "model.xml").write_text(f"writer {i}")
        _publish(tmp, final)
        assert not tmp.exists()
    assert (final / "model.xml").read_text() == "writer 0"


def test_failed_backend_falls_back_to_torch_keys(tmp_path, monkeypatch, fp32_torch_vectors):
    from activesynth.agent import embed

    class Broken:
        def __init__(self, *a, **k):
            raise ImportError("no openvino here")

    monkeypatch.setattr(embed, "_CompiledEncoder", Broken)
    texts, want = fp32_torch_vectors
    e = Embedder(cache_dir=tmp_path, precision="fp32", backend="openvino")
    v = e.encode(texts[:3])
    assert e.backend == "torch" and e.model_id == "all-MiniLM-L6-v2|fp32"
    np.testing.assert_allclose(v, want[:3], atol=1e-5)
    again = Embedder(cache_dir=tmp_path, precision="fp32", backend="torch")
    again.encode(texts[:3])
    assert again.cache_hits == 3  # stored under torch's keys, where torch looks


def test_progress_lines_on_the_default_install(fp32_torch_vectors):
    texts, want = fp32_torch_vectors
    texts, want = texts[:24], want[:24]
    lines: list[str] = []
    e = Embedder(cache_dir=False, precision="fp32", backend="torch", batch_size=4, progress_min=10)
    v = e.encode(texts, progress=lines.append)
    np.testing.assert_allclose(v, want, atol=1e-5)
    assert len(lines) >= 2, lines
    assert lines[0].startswith("embedding ") and f"/{len(texts)} texts" in lines[0]
    assert all("/s" in line for line in lines)
    assert "took" in lines[-1] and f"{len(texts)}/{len(texts)}" in lines[-1]
    quiet: list[str] = []
    e.progress_min = 5
    e.encode(texts[:5], progress=quiet.append)
    assert quiet == []  # not more than progress_min texts: no lines
    e.encode(texts[:3], show_progress=True)  # the old argument still works


@pytest.mark.parametrize("backend, module", [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_fast_backend_matches_fp32_on_real_texts(backend, module, fp32_torch_vectors):
    """The extra's backends against torch fp32: every one of ~50 real texts at cosine >= 0.999 (measured
    0.99999+), progress lines, the same vectors in any batch composition, and a shared sibling."""
    pytest.importorskip(module)
    if backend == "onnx":
        pytest.importorskip("onnx")
    texts, want = fp32_torch_vectors
    lines: list[str] = []
    e = Embedder(cache_dir=False, precision="fp32", backend=backend, batch_size=8, progress_min=10)
    v = e.encode(texts, progress=lines.append)
    assert e.backend == backend, "the backend fell back to torch (see the log)"
    cos = (v * want).sum(axis=1)
    assert cos.min() >= 0.999, cos.min()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert lines and lines[0].startswith("embedding ") and "took" in lines[-1], lines
    plain = e.uncached()
    assert plain._encoder is e._encoder and plain.backend == backend
    np.testing.assert_allclose(plain.encode(texts[::-1][:5]), v[::-1][:5], atol=1e-5)


@pytest.mark.skipif(not bf16_supported(), reason="CPU has no bf16 units")
def test_openvino_bf16_matches_fp32(fp32_torch_vectors):
    pytest.importorskip("openvino")
    texts, want = fp32_torch_vectors
    e = Embedder(cache_dir=False, precision="bf16", backend="openvino")
    v = e.encode(texts)
    assert e.backend == "openvino"
    assert (v * want).sum(axis=1).min() >= 0.999
