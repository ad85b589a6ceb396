"""Score uncertainty, cluster the uncertain texts with FAISS and write the uncertainty report.

The report (``uncertainty_report.json``, schema version 1; see ``docs/CONTRACTS.md``) is what the generation
agent reads. Texts in it come only from dev and pool; test texts are used for metrics only and never written.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activesynth.agent.config import ReportConfig, UncertaintyConfig
from activesynth.agent.datasets import Dataset
from activesynth.agent.embed import Embedder
from activesynth.agent.files import write_atomic, write_json
from activesynth.agent.runs import Round
from activesynth.agent.uncertainty import MCDropout, get_strategy
from activesynth.evaluators.metrics.classification import classification_metrics, confusion_pairs

__all__ = ["SCHEMA_VERSION", "build_report", "cluster_texts", "choose_k", "keywords", "write_report"]

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1

_STOP = set(
    """a an the and or but if of to in on at for from by with about into over after before under again
    is are was were be been being am do does did doing have has had having i me my we our you your he she it
    its they them their this that these those what which who whom why how when where can could would should
    will shall may might must not no nor so than too very just also only own same such both each few more
    most other some any all there here up down out off then once s t don isn aren wasn weren hasn haven
    didn doesn won wouldn shouldn couldn im ive dont cant get got please want need like know tell""".split()
)
_TOKEN = re.compile(r"[^\W\d_]{3,}", re.UNICODE)

Progress = Callable[[str], None]


def choose_k(n: int, cfg: ReportConfig) -> int:
    """Number of clusters: ``cfg.n_clusters`` or about sqrt(n/2) within [min_clusters, max_clusters]."""
    if n <= 1:
        return 1
    k = cfg.n_clusters or int(round(math.sqrt(n / 2)))
    k = max(cfg.min_clusters, min(cfg.max_clusters, k)) if cfg.n_clusters is None else k
    return max(1, min(k, n // 2 if n >= 4 else 1))


def cluster_texts(X: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical FAISS k-means; returns (assignments (n,), centroids (k, d))."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    if k <= 1 or len(X) <= 1:
        return np.zeros(len(X), dtype=int), X.mean(axis=0, keepdims=True)
    km = faiss.Kmeans(
        X.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    km.train(X)
    _, assign = km.index.search(X, 1)
    return assign[:, 0].astype(int), km.centroids


def keywords(cluster_texts_: list[str], all_texts: list[str], n: int = 6) -> list[str]:
    """Words frequent in a cluster and rarer elsewhere (smoothed document-frequency ratio)."""

    def docs(texts):
        return [set(t.lower() for t in _TOKEN.findall(x)) - _STOP for x in texts]

    inside = Counter(w for d in docs(cluster_texts_) for w in d)
    overall = Counter(w for d in docs(all_texts) for w in d)
    n_in, n_all = max(len(cluster_texts_), 1), max(len(all_texts), 1)
    scored = []
    for w, c in inside.items():
        if c < 2 and len(cluster_texts_) > 3:
            continue
        lift = ((c + 0.1) / n_in) / ((overall[w] + 1) / n_all)
        scored.append((lift * math.log1p(c), w))
    return [w for _, w in sorted(scored, reverse=True)[:n]]


@dataclass
class _Scored:
    """The dev + pool texts in report order, each with its split, gold label (dev only), the classifier's
    prediction and its uncertainty score."""

    texts: list[str]
    splits: list[str]
    gold: list[str | None]
    predicted: list[str]
    scores: np.ndarray

    def row(self, i: int) -> dict:
        """Text ``i`` as the report lists it (examples of a cluster, selected texts)."""
        return {
            "text": self.texts[i],
            "split": self.splits[i],
            "gold": self.gold[i],
            "predicted": self.predicted[i],
            "uncertainty": float(self.scores[i]),
        }


def build_report(
    dataset: Dataset,
    classifier,
    embedder: Embedder,
    ucfg: UncertaintyConfig,
    rcfg: ReportConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Score dev + pool, select the most uncertain texts, cluster them and compute metrics."""
    say = progress or (lambda _msg: None)
    classes = list(classifier.classes_)
    dev, pool = dataset.dev, dataset.pool
    texts = list(dev.texts) + (list(pool.texts) if pool else [])
    splits = ["dev"] * len(dev) + ["pool"] * (len(pool) if pool else 0)
    gold: list[str | None] = list(dev.labels or []) + [None] * (len(pool) if pool else 0)

    say(f"scoring uncertainty ({ucfg.strategy}) on {len(texts)} dev+pool texts")
    scores, mean = _score(classifier, texts, ucfg)
    scored = _Scored(texts, splits, gold, [classes[i] for i in mean.argmax(axis=1)], scores)

    say("computing metrics on dev and the held-out test split")
    metrics = _metrics(dataset, classifier, mean, classes)

    n_sel = ucfg.top_k or max(1, int(round(ucfg.top_fraction * len(texts))))
    n_sel = min(n_sel, len(texts))
    sel = np.argsort(-scores, kind="stable")[:n_sel]
    per_class = _per_class(scored, len(dev), sel, classes, metrics)
    confused = _confused_pairs(scored, len(dev), rcfg.top_pairs)

    say(f"embedding and clustering {n_sel} uncertain texts with FAISS")
    X = embedder.encode([texts[i] for i in sel])
    clusters, cluster_of = _clusters(scored, sel, X, rcfg, seed)
    selected = [{**scored.row(i), "cluster": cluster_of[int(i)]} for i in sel]
    map2d = _project_2d(X)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name,
            "labels": list(dataset.labels),
            "sizes": dataset.sizes(),
            "pii": dataset.pii,
        },
        "strategy": ucfg.strategy,
        "classifier": {
            "kind": getattr(classifier, "kind", type(classifier).__name__),
            "classes": len(classes),
        },
        "metrics": metrics,
        "per_class": per_class,
        "confused_pairs": confused,
        "clusters": clusters,
        "selected": selected,
        "selection": {"n_scored": len(texts), "n_selected": n_sel, "k": len(clusters)},
        "warnings": list(dataset.warnings),
        "_map": {"xy": map2d.tolist(), "cluster": [s["cluster"] for s in selected]},
    }


def _score(classifier, texts: list[str], ucfg: UncertaintyConfig) -> tuple[np.ndarray, np.ndarray]:
    """(uncertainty per text, class probabilities per text). The probabilities are the point predictions as
    the classifier makes them (a head ensemble: its full-data head), except under MC dropout, whose mean over
    passes is the prediction."""
    if ucfg.strategy == "mc_dropout":
        members = MCDropout(ucfg.mc_samples).sample(classifier, texts)
    else:
        members = classifier.member_proba(texts)
    strategy = get_strategy(ucfg.strategy)
    if members.shape[0] < 2 and ucfg.strategy in {"bald", "variance"}:
        raise ValueError(f"strategy '{ucfg.strategy}' needs an ensemble (n_heads >= 2) or mc_dropout")
    scores = strategy.score(members)
    mean = members.mean(axis=0) if ucfg.strategy == "mc_dropout" else classifier.predict_proba(texts)
    return scores, mean


def _metrics(dataset: Dataset, classifier, mean: np.ndarray, classes: list[str]) -> dict:
    """Classification metrics on dev (from ``mean``, dev rows first) and on the sealed test split."""
    dev = dataset.dev
    metrics = {"dev": classification_metrics(dev.labels or [], mean[: len(dev)], classes)}
    test_texts, test_labels = dataset.test.reveal("evaluation")
    metrics["test"] = classification_metrics(test_labels, classifier.predict_proba(test_texts), classes)
    del test_texts
    return metrics


def _per_class(scored: _Scored, n_dev: int, sel: np.ndarray, classes: list[str], metrics: dict) -> list[dict]:
    """One row per class, most uncertain first (dev gold labels; selected pool texts count toward their
    predicted class)."""
    dev_scores = scored.scores[:n_dev]
    dev_gold = np.array(scored.gold[:n_dev])
    dev_pred = np.array(scored.predicted[:n_dev])
    gold, predicted = scored.gold, scored.predicted
    sel_labels = Counter(gold[i] if gold[i] is not None else predicted[i] for i in sel)
    per_class = []
    for c in classes:
        m = dev_gold == c
        per_class.append(
            {
                "label": c,
                "support": int(m.sum()),
                "n_selected": int(sel_labels.get(c, 0)),
                "mean_uncertainty": float(dev_scores[m].mean()) if m.any() else 0.0,
                "dev_error_rate": float((dev_pred[m] != c).mean()) if m.any() else 0.0,
                "dev_f1": metrics["dev"]["per_class"][c]["f1"],
                "test_f1": metrics["test"]["per_class"][c]["f1"],
            }
        )
    per_class.sort(key=lambda r: (-r["mean_uncertainty"], r["label"]))
    return per_class


def _confused_pairs(scored: _Scored, n_dev: int, top: int) -> list[dict]:
    """The ``top`` most frequent (gold, predicted) dev errors with their mean uncertainty."""
    dev_scores = scored.scores[:n_dev]
    dev_gold = np.array(scored.gold[:n_dev])
    dev_pred = np.array(scored.predicted[:n_dev])
    pairs = confusion_pairs(list(dev_gold), list(dev_pred))
    pair_unc: dict[tuple[str, str], list[float]] = {}
    for i in range(n_dev):
        if dev_gold[i] != dev_pred[i]:
            pair_unc.setdefault((dev_gold[i], dev_pred[i]), []).append(float(dev_scores[i]))
    return [
        {"gold": g, "predicted": p, "count": c, "mean_uncertainty": float(np.mean(pair_unc[(g, p)]))}
        for (g, p), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    ][:top]


def _clusters(
    scored: _Scored, sel: np.ndarray, X: np.ndarray, rcfg: ReportConfig, seed: int
) -> tuple[list[dict], dict[int, int]]:
    """Cluster the selected texts (embeddings ``X``, in ``sel`` order); returns the clusters, largest
    uncertainty mass first and numbered in that order, and the cluster of every selected text index."""
    sel_texts = [scored.texts[i] for i in sel]
    assign, centroids = cluster_texts(X, choose_k(len(sel), rcfg), seed=seed)
    clusters = []
    for cid in range(centroids.shape[0]):
        members_ix = np.flatnonzero(assign == cid)
        if len(members_ix) == 0:
            continue
        rows = [int(sel[j]) for j in members_ix]
        sims = X[members_ix] @ centroids[cid] / max(np.linalg.norm(centroids[cid]), 1e-12)
        nearest = [rows[j] for j in np.argsort(-sims)[: rcfg.examples_per_cluster]]
        clusters.append(_cluster(len(clusters), scored, rows, nearest, sel_texts, rcfg.keywords_per_cluster))
    clusters.sort(key=lambda c: (-c["mean_uncertainty"] * c["size"], c["id"]))
    cluster_of: dict[int, int] = {}
    for new_id, c in enumerate(clusters):
        c["id"] = new_id
        for r in c.pop("_rows"):
            cluster_of[r] = new_id
    return clusters, cluster_of


def _cluster(
    cid: int, scored: _Scored, rows: list[int], nearest: list[int], sel_texts: list[str], n_keywords: int
) -> dict:
    """One cluster of the report; ``_rows`` (its text indices) is removed once clusters are numbered."""
    gold, predicted = scored.gold, scored.predicted
    gold_counts = Counter(gold[i] for i in rows if gold[i] is not None)
    errors = [i for i in rows if gold[i] is not None and gold[i] != predicted[i]]
    in_pairs = Counter((gold[i], predicted[i]) for i in errors)
    return {
        "id": cid,
        "size": len(rows),
        "mean_uncertainty": float(scored.scores[rows].mean()),
        "gold_labels": dict(gold_counts.most_common()),
        "predicted_labels": dict(Counter(predicted[i] for i in rows).most_common()),
        "confused_pairs": [{"gold": g, "predicted": p, "count": c} for (g, p), c in in_pairs.most_common()],
        "keywords": keywords([scored.texts[i] for i in rows], sel_texts, n_keywords),
        "examples": [scored.row(i) for i in nearest],
        "_rows": rows,
    }


def _project_2d(X: np.ndarray) -> np.ndarray:
    if len(X) < 3:
        return np.zeros((len(X), 2))
    Xc = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ vt[:2].T


# ----------------------------------------------------------------------------------------------------------
# Writing


def write_report(report: dict, out_dir: Path, plots: bool = True) -> dict[str, Path]:
    """Write the PNG plots, ``uncertainty_report.md`` and, last and atomically, ``uncertainty_report.json``
    (a resumed run treats it as the mark of a finished report) into a round folder."""
    rnd = Round(Path(out_dir), 0)
    data = {k: v for k, v in report.items() if not k.startswith("_")}
    paths = {"json": rnd.file(Round.REPORT), "md": rnd.file(Round.REPORT_MD)}
    if plots:
        paths.update(_plots(report, rnd.file(Round.PLOTS)))
    write_atomic(paths["md"], render_markdown(data))
    write_json(paths["json"], data)
    return paths


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def render_markdown(r: dict) -> str:
    """A readable summary of the report."""
    m_dev, m_test = r["metrics"]["dev"], r["metrics"]["test"]
    lines = [
        f"# Uncertainty report — {r['dataset']['name']}",
        "",
        f"Strategy: `{r['strategy']}` · classifier: `{r['classifier']['kind']}` · sizes: "
        + ", ".join(f"{k} {v}" for k, v in r["dataset"]["sizes"].items())
        + f" · selected {r['selection']['n_selected']} of {r['selection']['n_scored']} dev+pool texts"
        + f" in {r['selection']['k']} clusters",
        "",
        "| split | accuracy | macro P | macro R | macro F1 | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in (("dev", m_dev), ("test", m_test)):
        lines.append(
            f"| {name} | {_fmt(m['accuracy'])} | {_fmt(m['macro_precision'])} | {_fmt(m['macro_recall'])} "
            f"| {_fmt(m['macro_f1'])} | {_fmt(m['ece'])} |"
        )
    lines += [
        "",
        "## Most uncertain classes",
        "",
        "| class | mean uncertainty | dev error | dev F1 | selected |",
        "|---|---|---|---|---|",
    ]
    for c in r["per_class"][:15]:
        lines.append(
            f"| {c['label']} | {_fmt(c['mean_uncertainty'])} | {_fmt(c['dev_error_rate'])} "
            f"| {_fmt(c['dev_f1'])} | {c['n_selected']} |"
        )
    lines += ["", "## Most confused label pairs (dev)", "", "| gold | predicted | count |", "|---|---|---|"]
    for p in r["confused_pairs"][:15]:
        lines.append(f"| {p['gold']} | {p['predicted']} | {p['count']} |")
    lines += ["", "## Clusters of uncertain texts", ""]
    for c in r["clusters"]:
        gold = ", ".join(f"{k} ({v})" for k, v in list(c["gold_labels"].items())[:3]) or "—"
        lines += [
            f"### Cluster {c['id']} — {c['size']} texts, mean uncertainty {_fmt(c['mean_uncertainty'])}",
            f"Keywords: {', '.join(c['keywords']) or '—'} · gold: {gold}",
            "",
        ]
        for e in c["examples"]:
            gold_s = e["gold"] or "?"
            text = e["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"- “{text}” — gold `{gold_s}`, predicted `{e['predicted']}`")
        lines.append("")
    if r.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"


def _plots(report: dict, folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    pc = report["per_class"][:30]
    fig, ax = plt.subplots(figsize=(10, max(4, 0.28 * len(pc))))
    y = np.arange(len(pc))
    ax.barh(y - 0.2, [c["mean_uncertainty"] for c in pc], height=0.4, label="mean uncertainty")
    ax.barh(y + 0.2, [c["dev_error_rate"] for c in pc], height=0.4, label="dev error rate")
    ax.set_yticks(y, [c["label"] for c in pc], fontsize=7)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title("Most uncertain classes")
    fig.tight_layout()
    out["per_class"] = folder / "per_class_uncertainty.png"
    fig.savefig(out["per_class"], dpi=110)
    plt.close(fig)

    pairs = report["confused_pairs"][:20]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.3 * len(pairs) + 1)))
    ax.barh(range(len(pairs)), [p["count"] for p in pairs])
    ax.set_yticks(range(len(pairs)), [f"{p['gold']} → {p['predicted']}" for p in pairs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("dev errors")
    ax.set_title("Top confused label pairs (gold → predicted)")
    fig.tight_layout()
    out["pairs"] = folder / "confused_pairs.png"
    fig.savefig(out["pairs"], dpi=110)
    plt.close(fig)

    xy = np.array(report["_map"]["xy"]).reshape(-1, 2)
    cl = np.array(report["_map"]["cluster"])
    fig, ax = plt.subplots(figsize=(7, 6))
    if len(xy):
        ax.scatter(xy[:, 0], xy[:, 1], c=cl, cmap="tab20", s=10, alpha=0.8)
        for c in report["clusters"]:
            m = cl == c["id"]
            if m.any():
                cx, cy = xy[m].mean(axis=0)
                ax.annotate(str(c["id"]), (cx, cy), fontsize=8, weight="bold")
    ax.set_title("Clusters of uncertain texts (PCA of embeddings)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out["map"] = folder / "cluster_map.png"
    fig.savefig(out["map"], dpi=110)
    plt.close(fig)
    return out
