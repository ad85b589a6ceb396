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
- AUC p(label): how well the judge's probability of the carried label separates right from wrong labels
  (0.5: not at all; threshold-free, so it shows signal that a fixed keep rule can hide); AUC × classifier:
  the same for the product of the judge's and the classifier's probabilities (does the judge add anything
  to the classifier, whose own AUC is in its row?);
- seconds per item answered fresh (model loaded beforehand; the machine may be shared); ``--cache`` keeps the
  answers so that a rerun costs nothing (then it says "cached").

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
    clf = {"keep": clf_keep, "auc": auc(p, right), "p": p}
    rival_sets = rivals_from_proba(proba, classes, assigned, rivals)
    rows = zip(texts, assigned, rival_sets, strict=True)
    items = [JudgeItem(t, a, r, f"t{k}") for k, (t, a, r) in enumerate(rows)]
    examples: dict[str, list[str]] = {}
    for t, lab in zip(ds.train.texts, ds.train.labels, strict=True):
        examples.setdefault(lab, []).append(t)
    return items, gold, np.array(right), clf, examples


def auc(scores, positive) -> float:
    """Probability that a random positive scores above a random negative (ties count half); nan if none."""
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    ok = ~np.isnan(scores)
    pos, neg = scores[positive & ok], scores[~positive & ok]
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def summarize(name: str, verdicts, gold, right, clf_p, seconds: float, min_conf: float) -> list[str]:
    """Three table rows for one judge run: agree, not overruled, batch-calibrated agree."""
    from activesynth.agent.judge import batch_calibrate

    def pct(x) -> str:
        return f"{100 * float(x):.0f} %"

    def p_label(vs) -> np.ndarray:
        return np.array([np.nan if v.p_label is None else v.p_label for v in vs])

    def with_classifier(p_judge: np.ndarray) -> float:  # both probabilities of the carried label, multiplied
        return auc(np.log(np.maximum(clf_p, 1e-9)) + np.log(np.maximum(p_judge, 1e-9)), right)

    wrong = ~right
    agree = np.array([v.decision == "agree" for v in verdicts])
    kept = np.array([v.decision != "disagree" for v in verdicts])
    gold_chosen = np.mean([v.choice == g for v, g in zip(verdicts, gold, strict=True)], where=wrong)
    picks_a = np.mean([v.letter == "A" for v in verdicts if v.letter])
    unsure = np.mean([v.decision == "unsure" for v in verdicts])
    mass = np.nanmean([np.nan if v.mass is None else v.mass for v in verdicts])
    fresh = [v for v in verdicts if not v.cached]
    per_item = f"{seconds / len(fresh):.2f}" if fresh else "cached"
    cal = batch_calibrate(verdicts, min_conf, min_items=2)
    cal_agree = np.array([v.choice == v.label for v in cal])
    cal_gold = np.mean([v.choice == g for v, g in zip(cal, gold, strict=True)], where=wrong)
    raw_p, cal_p = p_label(verdicts), p_label(cal)
    kept_right, kept_wrong = pct(kept[right].mean()), pct(kept[wrong].mean())
    cal_right, cal_wrong = pct(cal_agree[right].mean()), pct(cal_agree[wrong].mean())
    return [
        f"| {name} | agree | {pct(agree[right].mean())} | {pct(agree[wrong].mean())} | {pct(gold_chosen)} "
        f"| {pct(picks_a)} | {pct(unsure)} | {mass:.2f} | {auc(raw_p, right):.2f} "
        f"| {with_classifier(raw_p):.2f} | {per_item} |",
        f"| {name} | not overruled (≥ {min_conf:.1f}) | {kept_right} | {kept_wrong} | | | | | | | |",
        f"| {name} | batch-calibrated agree | {cal_right} | {cal_wrong} "
        f"| {pct(cal_gold)} | | | | {auc(cal_p, right):.2f} | {with_classifier(cal_p):.2f} | |",
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
    ap.add_argument(
        "--cache",
        default=None,
        help="LLM cache file to keep answers across runs (default: a fresh one, so every answer is timed).",
    )
    args = ap.parse_args()

    from activesynth.agent.config.judge import JudgeConfig
    from activesynth.agent.judge import make_judge
    from activesynth.agent.llm import LocalConfig
    from activesynth.agent.llm.local import LocalBackend

    t0 = time.perf_counter()
    items, gold, right, clf, examples = build_items(args.items, args.rivals, args.seed)
    clf_keep = clf["keep"]
    print(
        f"BANKING77 test, {len(items)} texts ({right.sum()} right, {(~right).sum()} wrong labels), "
        f"{args.rivals + 1} options each; classifier and data ready in {time.perf_counter() - t0:.0f}s\n"
    )
    lines = [
        "| judge | keep rule | right kept | wrong kept | gold chosen (wrong) | picks A | unsure "
        "| letter mass | AUC p(label) | AUC × classifier | s/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| 10-shot classifier | p ≥ 0.1 and margin ≥ −0.1 | {100 * clf_keep[right].mean():.0f} % "
        f"| {100 * clf_keep[~right].mean():.0f} % | | | | | {clf['auc']:.2f} | | |",
    ]
    for model in args.models.split(","):
        spec = model if model == "gemma3-270m" else packaged_path(model)
        if spec is None:
            print(f"{model}: not assembled in the model cache; skipped")
            continue
        be = LocalBackend(LocalConfig(model=spec, runtime="llama_cpp", threads=args.threads, n_ctx=2048))
        be.load()
        for k in (int(x) for x in args.examples.split(",")):
            cfg = JudgeConfig(rivals=args.rivals, examples_per_option=k, min_confidence=args.min_confidence)
            with tempfile.TemporaryDirectory() as tmp:
                cache = Path(args.cache) if args.cache else Path(tmp) / "llm.sqlite"
                judge = make_judge(cfg, generator=be, cache=cache, examples=examples, task=TASK)
                t = time.perf_counter()
                verdicts = judge.judge(items)
                seconds = time.perf_counter() - t
                judge.backend.cache.close()
            name = f"{model} ({judge.template.name}, {k} ex.)"
            block = summarize(name, verdicts, gold, right, clf["p"], seconds, args.min_confidence)
            print("\n".join(block), flush=True)
            lines.extend(block)
        be.close()
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
