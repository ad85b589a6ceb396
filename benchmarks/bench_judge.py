"""LLM judge benchmark: does a local model keep right labels and reject wrong ones on BANKING77?

Real BANKING77 test texts (``--items``, seeded): half carry their gold label, half the 10-shot classifier's
most confusable wrong label (its likeliest class other than the gold one). Each text is judged with the
options "its label + the classifier's top ``--rivals`` others" (:class:`activesynth.agent.judge.LabelJudge`,
through the call cache in a fresh folder, so every answer is really generated). Per model and number of
example texts per option, the table reports:

- right kept / wrong kept: share of gold-labelled / wrongly labelled texts on which the judge chose the
  label they carry (``agree``); a good judge keeps many right and few wrong ones;
- the same when a text is kept unless the judge overrules it (``disagree`` at ``min_confidence``), the
  gentler rule a filter would use;
- gold chosen: share of wrongly labelled texts where the judge picked the gold label (what relabelling
  would recover); picks A: share of answers that are letter A (position bias; options are in a fixed mixed
  order, so about 1 / options is unbiased);
- batch-calibrated rows: the letters' probabilities divided by their mean over the batch before choosing
  (removes a model's letter preference without any extra call);
- seconds per item (model loaded beforehand; the machine may be shared).

The classifier's own margin rule (keep when p(label) >= 0.1 and margin >= -0.1) is the reference row.
Models: ``gemma3-270m`` always; packaged models (``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``) only when
already assembled in the model cache (never fetched here).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_judge`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = "Messages that customers send to their bank's support chat"


def packaged_path(name: str) -> str | None:
    """The assembled GGUF of a packaged model, or None when it is not in the cache (never fetched)."""
    from activesynth.agent.llm.local import default_cache_dir

    try:
        from activesynth.agent.llm.models import PACKAGED_MODELS, cached_path
    except ImportError:
        return None
    if name not in PACKAGED_MODELS:
        return None
    path = cached_path(PACKAGED_MODELS[name], default_cache_dir())
    return str(path) if path.exists() else None


def build_items(n: int, rivals: int, seed: int):
    """(items, gold labels, truth flags, classifier keep flags, few-shot examples by label)."""
    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.datasets import load
    from activesynth.agent.embed import Embedder
    from activesynth.agent.judge import JudgeItem, rivals_from_proba

    cfg = RunConfig(data=DataConfig(dataset="banking77", shots=10, seed=seed, selection_fraction=0))
    ds = load(cfg.data)
    clf = build_classifier(cfg.classifier, Embedder())
    clf.fit(ds.train.texts, ds.train.labels)
    texts, gold = ds.test.reveal("evaluation")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=n, replace=False)
    texts = [texts[i] for i in pick]
    gold = [gold[i] for i in pick]
    classes = list(clf.classes_)
    proba = np.asarray(clf.predict_proba(texts))
    assigned, right = [], []
    for k, (row, g) in enumerate(zip(proba, gold, strict=True)):
        if k < n // 2:
            assigned.append(g)
            right.append(True)
        else:  # the classifier's likeliest class other than the gold one
            order = [classes[j] for j in np.argsort(-row, kind="stable") if classes[j] != g]
            assigned.append(order[0])
            right.append(False)
    idx = np.array([classes.index(a) for a in assigned])
    p = proba[np.arange(n), idx]
    others = proba.copy()
    others[np.arange(n), idx] = -np.inf
    margin = p - others.max(axis=1)
    clf_keep = (p >= 0.1) & (margin >= -0.1)
    rival_sets = rivals_from_proba(proba, classes, assigned, rivals)
    rows = zip(texts, assigned, rival_sets, strict=True)
    items = [JudgeItem(t, a, r, f"t{k}") for k, (t, a, r) in enumerate(rows)]
    examples: dict[str, list[str]] = {}
    for t, lab in zip(ds.train.texts, ds.train.labels, strict=True):
        examples.setdefault(lab, []).append(t)
    return items, gold, np.array(right), clf_keep, examples


def batch_calibrated(verdicts) -> list[str | None]:
    """Choices after dividing each letter's probability by its mean over the verdicts (batch calibration)."""
    rows = [v for v in verdicts if v.probs]
    width = max((len(v.options) for v in rows), default=0)
    mean = np.zeros(width)
    count = np.zeros(width)
    for v in rows:
        for j, lab in enumerate(v.options):
            mean[j] += v.probs[lab]
            count[j] += 1
    mean = mean / np.maximum(count, 1)
    out: list[str | None] = []
    for v in verdicts:
        if not v.probs:
            out.append(v.choice)
            continue
        scores = [v.probs[lab] / max(mean[j], 1e-9) for j, lab in enumerate(v.options)]
        out.append(v.options[int(np.argmax(scores))])
    return out


def summarize(name: str, verdicts, gold, right, seconds: float, min_conf: float) -> list[str]:
    n = len(verdicts)
    agree = np.array([v.decision == "agree" for v in verdicts])
    overruled = np.array([v.decision == "disagree" for v in verdicts])
    unsure = np.mean([v.decision == "unsure" for v in verdicts])
    gold_chosen = np.mean([v.choice == g for v, g, r in zip(verdicts, gold, right, strict=True) if not r])
    picks_a = np.mean([v.letter == "A" for v in verdicts if v.letter])
    mass = np.mean([v.mass for v in verdicts if v.mass is not None] or [np.nan])
    cal = batch_calibrated(verdicts)
    cal_keep = np.array([c == v.label for c, v in zip(cal, verdicts, strict=True)])
    cal_gold = np.mean([c == g for c, g, r in zip(cal, gold, right, strict=True) if not r])

    def pct(x) -> str:
        return f"{100 * float(x):.0f} %"

    return [
        f"| {name} | agree | {pct(agree[right].mean())} | {pct(agree[~right].mean())} | {pct(gold_chosen)} "
        f"| {pct(picks_a)} | {pct(unsure)} | {mass:.2f} | {seconds / n:.2f} |",
        f"| {name} | not overruled (≥ {min_conf:.1f}) | {pct((~overruled)[right].mean())} "
        f"| {pct((~overruled)[~right].mean())} | | | | | |",
        f"| {name} | batch-calibrated agree | {pct(cal_keep[right].mean())} | {pct(cal_keep[~right].mean())} "
        f"| {pct(cal_gold)} | | | | |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100, help="Test texts judged (half right, half wrong).")
    ap.add_argument("--rivals", type=int, default=4, help="Rival labels offered besides the assigned one.")
    ap.add_argument("--examples", default="0,2", help="Example texts per option to try (comma list).")
    ap.add_argument("--models", default="gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from activesynth.agent.config.judge import JudgeConfig
    from activesynth.agent.judge import make_judge
    from activesynth.agent.llm import LocalConfig
    from activesynth.agent.llm.local import LocalBackend

    t0 = time.perf_counter()
    items, gold, right, clf_keep, examples = build_items(args.items, args.rivals, args.seed)
    print(
        f"BANKING77 test, {len(items)} texts ({right.sum()} right, {(~right).sum()} wrong labels), "
        f"{args.rivals + 1} options each; classifier and data ready in {time.perf_counter() - t0:.0f}s\n"
    )
    lines = [
        "| judge | keep rule | right kept | wrong kept | gold chosen (wrong) | picks A | unsure "
        "| letter mass | s/item |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| 10-shot classifier | p ≥ 0.1 and margin ≥ −0.1 | {100 * clf_keep[right].mean():.0f} % "
        f"| {100 * clf_keep[~right].mean():.0f} % | | | | | |",
    ]
    for model in args.models.split(","):
        spec = model if model == "gemma3-270m" else packaged_path(model)
        if spec is None:
            print(f"{model}: not assembled in the model cache; skipped")
            continue
        be = LocalBackend(LocalConfig(model=spec, runtime="llama_cpp", threads=args.threads, n_ctx=2048))
        be.load()
        for k in (int(x) for x in args.examples.split(",")):
            cfg = JudgeConfig(
                enabled=True, rivals=args.rivals, examples_per_option=k, min_confidence=args.min_confidence
            )
            with tempfile.TemporaryDirectory() as tmp:
                judge = make_judge(
                    cfg, generator=be, cache=Path(tmp) / "llm.sqlite", examples=examples, task=TASK
                )
                t = time.perf_counter()
                verdicts = judge.judge(items)
                seconds = time.perf_counter() - t
                judge.backend.cache.close()
            name = f"{model} ({judge.template.name}, {k} ex.)"
            block = summarize(name, verdicts, gold, right, seconds, args.min_confidence)
            print("\n".join(block), flush=True)
            lines.extend(block)
        be.close()
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
