"""Ceiling: what would *real* labelled texts buy, added exactly the way the loop adds synthetic ones?

Synthetic texts are at best as useful as real texts of the same classes. This benchmark takes the real
training texts that the few-shot sample left out, adds N of them through the loop's own path (the per-class
cap, class-balanced sample weights, the weight chosen on the selection split) and reports the test accuracy
gained over real-only, for N texts spread uniformly over classes and for N texts given to the classes the
real-only model gets most wrong on dev (the "targeted" shape of an active run). No generator is involved, so
it runs in minutes; it bounds what the effectiveness benchmark can show at a given budget.

    python -m benchmarks.ceiling --dataset banking77 --seeds 0,1,2 --budgets 100,300,770
"""

from __future__ import annotations

import argparse
import os
import random
from collections import Counter
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _uniform(extra: dict[str, list[str]], n: int, rng: random.Random) -> list[dict]:
    labels = sorted(extra)
    out, i = [], 0
    queues = {lab: rng.sample(extra[lab], len(extra[lab])) for lab in labels}
    while len(out) < n and any(queues.values()):
        lab = labels[i % len(labels)]
        if queues[lab]:
            out.append({"text": queues[lab].pop(), "label": lab})
        i += 1
    return out


def _targeted(extra: dict[str, list[str]], n: int, rng: random.Random, errors: Counter, k: int) -> list[dict]:
    worst = [lab for lab, _ in errors.most_common(k)] or sorted(extra)[:k]
    return _uniform({lab: extra[lab] for lab in worst if lab in extra}, n, rng)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="banking77")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default="100,300,770")
    ap.add_argument("--targeted-classes", type=int, default=20)
    args = ap.parse_args()

    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.datasets import load, load_builtin
    from activesynth.agent.embed import Embedder
    from activesynth.agent.loop import select_weight
    from activesynth.evaluators.metrics.classification import classification_metrics

    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    emb = Embedder()
    train_all, _, _ = load_builtin(args.dataset)
    gains: dict[tuple[str, int], list[float]] = {}
    base_acc = []
    for seed in seeds:
        cfg = RunConfig(
            data=DataConfig(dataset=args.dataset, shots=args.shots, seed=seed, selection_fraction=0.5)
        )
        cfg.classifier.seed = seed
        ds = load(cfg.data)
        run = SimpleNamespace(config=cfg)
        texts, labels = ds.test.reveal("evaluation")
        used = set(ds.train.texts) | set(ds.dev.texts) | set(ds.select.texts) | set(texts)
        extra: dict[str, list[str]] = {}
        for t, lab in zip(train_all.texts, train_all.labels, strict=True):
            if t not in used:
                extra.setdefault(lab, []).append(t)
        clf = build_classifier(cfg.classifier, emb).fit(ds.train.texts, ds.train.labels)
        acc0 = classification_metrics(labels, clf.predict_proba(texts), clf.classes_)["accuracy"]
        base_acc.append(acc0)
        pred = np.array(clf.classes_)[clf.predict_proba(ds.dev.texts).argmax(1)]
        errors = Counter(g for g, p in zip(ds.dev.labels, pred, strict=True) if g != p)
        for shape in ("uniform", "targeted"):
            for n in budgets:
                rng = random.Random(f"{seed}:{shape}:{n}")
                if shape == "uniform":
                    add = _uniform(extra, n, rng)
                else:
                    add = _targeted(extra, n, rng, errors, args.targeted_classes)
                w, _, clf_n, _ = select_weight(run, ds, emb, add)
                acc = classification_metrics(labels, clf_n.predict_proba(texts), clf_n.classes_)["accuracy"]
                gains.setdefault((shape, n), []).append(acc - acc0)
                print(
                    f"seed {seed} {shape:9s} +{n:4d} real: weight {w}, test acc {acc:.4f} ({acc - acc0:+.4f})"
                )

    print(
        f"\n{args.dataset} {args.shots}-shot, seeds {seeds}: real-only test accuracy "
        f"{100 * np.mean(base_acc):.2f} ± {100 * np.std(base_acc, ddof=1 if len(seeds) > 1 else 0):.2f}\n"
    )
    print("| real texts added | shape | Δ test accuracy (points, mean ± sd) |")
    print("|---|---|---|")
    for (shape, n), g in gains.items():
        sd = np.std(g, ddof=1) if len(g) > 1 else 0.0
        print(f"| {n} | {shape} | {100 * np.mean(g):+.2f} ± {100 * sd:.2f} |")


if __name__ == "__main__":
    main()
