"""What is a run's synthetic data worth, and what holds it back: wrong labels or the texts themselves?

Reads the candidates a finished run generated (every round, with every evaluator's decision) and, with no
new LLM call, re-trains the classifier the loop's way (per-class cap, class-balanced weights, weight chosen
on the selection split) on the real texts plus one subset of candidates at a time:

- ``accepted``: what the run's filters accepted (all rounds, rolled-back ones included);
- ``accepted, label right``: those of them an *oracle* agrees with. The oracle is the same kind of head
  trained on every real training text outside the few-shot sample, dev and test (about 93 % on BANKING77);
- ``filters pass, margin >= m``: candidates every other filter kept, with a stricter label-agreement margin
  (p(label) - max p(other)) from the real-only classifier;
- ``filters pass, pool margin >= m``: the same margin, out of fold, from a head fit on the real texts plus
  the other folds of the candidate pool (confident learning: the pool votes on each candidate's label);
- ``filters pass, label right``: every other filter kept them and the oracle agrees (a perfect label filter);
- ``filters pass, oracle label``: every other filter kept them, labelled by the oracle (a perfect labeller).

For each: texts used, label fidelity (the oracle's agreement with the intended labels), the synthetic weight
chosen and the test accuracy gained over real-only. The oracle and the test split are read only here, in a
benchmark, never by the loop. ``--by-template`` prints label fidelity per prompt template instead.

    python -m benchmarks.synthetic_value runs/effectiveness/banking77/seed-0/active
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def candidates(run_dir: Path) -> list[dict]:
    """Parsed candidates of every round with their decisions and acceptance."""
    from activesynth.agent.filtering import read_jsonl

    out = []
    for rd in sorted(run_dir.glob("round-*")):
        if not (rd / "decisions.jsonl").exists():
            continue
        dec = {d["id"]: d for _, d in read_jsonl(rd / "decisions.jsonl")}
        for _, c in read_jsonl(rd / "candidates.jsonl"):
            d = dec.get(c["id"])
            if c.get("status") != "parsed" or d is None:
                continue
            c["accepted"] = bool(d["accepted"])
            c["verdicts"] = {x["evaluator"]: x["verdict"] for x in d["decisions"]}
            out.append(c)
    return out


def oracle_head(emb, texts, labels: list[str]):
    """The oracle: one logistic head (all data, no bootstrap) on frozen embeddings of real texts the loop
    never sees. ``texts`` may be precomputed embeddings (an array aligned with ``labels``)."""
    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.config import ClassifierConfig

    head = build_classifier(ClassifierConfig(n_heads=1, bootstrap=False), emb)
    if isinstance(texts, np.ndarray):
        return head.fit_embeddings(texts, labels)
    return head.fit(texts, labels)


def pool_margin(emb, ds, cands: list[dict], mask: np.ndarray, C: float, weight: float, k: int = 5):
    """Out-of-fold margin of each masked candidate's intended label (-1 where not masked)."""
    from activesynth.agent.classifier import HeadEnsemble

    idx = np.flatnonzero(mask)
    margin = np.full(len(cands), -1.0)
    if len(idx) < k:
        return margin
    X_real = emb.encode(ds.train.texts)
    X_c = emb.encode([cands[i]["text"] for i in idx])
    y_c = np.array([cands[i]["label"] for i in idx])
    folds = np.random.default_rng(0).permutation(np.arange(len(idx)) % k)
    for f in range(k):
        tr, te = folds != f, folds == f
        head = HeadEnsemble(emb, 1, "logistic", C, False, 0, "full")
        w = np.concatenate([np.ones(len(X_real)), np.full(int(tr.sum()), weight)])
        head.fit_embeddings(np.vstack([X_real, X_c[tr]]), list(ds.train.labels) + list(y_c[tr]), w)
        col = {c: j for j, c in enumerate(head.classes_)}
        for prob, i in zip(head.predict_proba_embeddings(X_c[te]), idx[te], strict=True):
            j = col[cands[i]["label"]]
            margin[i] = prob[j] - np.max(np.delete(prob, j))
    return margin


def study(path: str, emb, args) -> None:
    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.datasets import load, load_builtin
    from activesynth.agent.loop import select_weight
    from activesynth.agent.runs import Run
    from activesynth.evaluators.label_agreement import LabelAgreement
    from activesynth.evaluators.metrics.classification import classification_metrics

    cfg = Run.open(Path(path)).config
    ds = load(cfg.data)
    test_texts, test_labels = ds.test.reveal("evaluation")
    shim = SimpleNamespace(config=cfg)

    def test_acc(clf) -> float:
        return classification_metrics(test_labels, clf.predict_proba(test_texts), clf.classes_)["accuracy"]

    base = build_classifier(cfg.classifier, emb).fit(ds.train.texts, ds.train.labels)
    acc0 = test_acc(base)
    full, _, _ = load_builtin(cfg.data.dataset)
    held = set(test_texts) | set(ds.dev.texts) | set(ds.select.texts if ds.select else [])
    keep = [i for i, t in enumerate(full.texts) if t not in held]
    oracle = oracle_head(emb, [full.texts[i] for i in keep], [full.labels[i] for i in keep])
    cands = candidates(Path(path))
    if not cands:
        print(f"| {path} | no candidates | | | | |")
        return
    texts = [c["text"] for c in cands]
    pred = np.array(oracle.classes_)[oracle.predict_proba(texts).argmax(1)]
    right = np.array([p == c["label"] for p, c in zip(pred, cands, strict=True)])
    accepted = np.array([c["accepted"] for c in cands])
    if args.by_template:
        for t in sorted({c["template"] for c in cands}):
            m = np.array([c["template"] == t for c in cands])
            fa = f"{right[m & accepted].mean():.2f}" if (m & accepted).any() else "-"
            n_acc = int((m & accepted).sum())
            print(f"| {path} | {t} | {int(m.sum())} / {n_acc} | {right[m].mean():.2f} / {fa} |")
        return
    margin = LabelAgreement().scores(texts, [c["label"] for c in cands], base)["margin"]
    others = np.array(
        [all(v != "drop" for k, v in c["verdicts"].items() if k != "label_agreement") for c in cands]
    )
    pmargin = pool_margin(emb, ds, cands, others, cfg.classifier.C, args.pool_weight)

    def row(name: str, mask: np.ndarray, relabel: bool = False) -> None:
        recs = [
            {"text": c["text"], "label": str(pred[i]) if relabel else c["label"]}
            for i, c in enumerate(cands)
            if mask[i]
        ]
        fid = f"{right[mask].mean():.2f}" if mask.any() else "-"
        w, _, clf, _ = select_weight(shim, ds, emb, recs)
        print(f"| {path} | {name} | {len(recs)} | {fid} | {w} | {100 * (test_acc(clf) - acc0):+.2f} |")

    print(f"| {path} | real only (test acc {100 * acc0:.2f}) | 0 | | | +0.00 |")
    row("accepted", accepted)
    row("accepted, label right", accepted & right)
    for m in (float(x) for x in args.margins.split(",")):
        row(f"filters pass, margin >= {m}", others & (margin >= m))
    for m in (float(x) for x in args.pool_margins.split(",")):
        row(f"filters pass, pool margin >= {m}", others & (pmargin >= m))
    row("filters pass, label right", others & right)
    row("filters pass, oracle label", others, relabel=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="run folders (an arm of a compare run)")
    ap.add_argument("--margins", default="0.0,0.3", help="label-agreement margins to try")
    ap.add_argument("--pool-margins", default="0.0,0.2", help="out-of-fold pool margins to try")
    ap.add_argument("--pool-weight", type=float, default=0.3, help="candidate weight in the pool heads")
    ap.add_argument("--by-template", action="store_true", help="only print label fidelity per template")
    args = ap.parse_args()

    from activesynth.agent.embed import Embedder

    emb = Embedder()
    if args.by_template:
        print("| run | template | parsed / accepted | label fidelity: parsed / accepted |")
        print("|---|---|---|---|")
    else:
        print("| run | subset | texts | label fidelity | weight | Δ test accuracy |")
        print("|---|---|---|---|---|---|")
    for path in args.runs:
        study(path, emb, args)


if __name__ == "__main__":
    main()
