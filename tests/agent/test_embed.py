import numpy as np
import pytest

from activesynth.agent.embed import Embedder, bf16_supported, resolve_model_path
from tests.conftest import banking_slice


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
