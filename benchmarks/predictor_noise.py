"""How much do point predictions move with the bootstrap seed alone? Head 0 (`predict: full`) vs the mean.

The loop's rollback guard and weight choice compare selection macro-F1 across fits; noise from resampling the
heads decides them if it is as large as the effect of the synthetic texts. Prints, per dataset and predictor,
selection macro-F1 and test accuracy over classifier seeds (same data, same 10-shot sample).

    python -m benchmarks.predictor_noise --datasets banking77,hwu64 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="banking77,hwu64")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--shots", type=int, default=10)
    args = ap.parse_args()

    from activesynth.agent.classifier import build_classifier
    from activesynth.agent.config import DataConfig, RunConfig
    from activesynth.agent.datasets import load
    from activesynth.agent.embed import Embedder
    from activesynth.evaluators.metrics.classification import classification_metrics

    emb = Embedder()
    print("| dataset | predictor | selection macro-F1 (min–max) | test accuracy (min–max) |")
    print("|---|---|---|---|")
    for name in args.datasets.split(","):
        cfg = RunConfig(data=DataConfig(dataset=name, shots=args.shots, seed=0, selection_fraction=0.5))
        ds = load(cfg.data)
        texts, labels = ds.test.reveal("evaluation")
        for predict in ("full", "ensemble"):
            sel, test = [], []
            for s in (int(x) for x in args.seeds.split(",")):
                clf = build_classifier(cfg.classifier.model_copy(update={"seed": s, "predict": predict}), emb)
                clf.fit(ds.train.texts, ds.train.labels)
                p_sel = clf.predict_proba(ds.select.texts)
                sel.append(classification_metrics(ds.select.labels, p_sel, clf.classes_)["macro_f1"])
                test.append(
                    classification_metrics(labels, clf.predict_proba(texts), clf.classes_)["accuracy"]
                )
            print(
                f"| {name} | {predict} | {100 * np.min(sel):.2f}–{100 * np.max(sel):.2f} "
                f"| {100 * np.min(test):.2f}–{100 * np.max(test):.2f} |"
            )


if __name__ == "__main__":
    main()
