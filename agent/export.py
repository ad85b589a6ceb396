"""Export a finished run: the accepted synthetic data used for training (JSON, JSONL, a Hugging Face dataset
folder), its dataset card and the final classifier, under ``<run>/export/``."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from activesynth.agent.files import write_atomic, write_json, write_jsonl
from activesynth.agent.runs import Run

__all__ = ["export"]

log = logging.getLogger(__name__)


def export(run: Run, clf, kept: list[dict], history: list[dict], final: dict) -> Path:
    """Write ``export/``: the accepted synthetic data used for training (JSONL, a Hugging Face dataset
    folder, a dataset card) and the final classifier."""
    out = run.export_dir
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out / "model")
    write_json(out / "synthetic.json", kept)
    write_jsonl(out / "synthetic.jsonl", kept)
    try:
        from datasets import Dataset as HFDataset

        cols = ("text", "label", "round", "template", "template_version", "model", "cluster", "sample_index")
        rows = [{c: (None if r.get(c) is None else str(r.get(c))) for c in cols} for r in kept]
        HFDataset.from_list(rows or [dict.fromkeys(cols, "")]).select(range(len(rows))).save_to_disk(
            str(out / "hf_dataset")
        )
    except Exception as e:  # noqa: BLE001 - the JSONL export above is the primary one
        log.warning("could not write the Hugging Face dataset folder: %s", e)
    cfg = run.config
    by_label = Counter(r["label"] for r in kept)
    templates = Counter(f"{r.get('template')}@{str(r.get('template_version'))[:12]}" for r in kept)
    models = Counter(r.get("model") for r in kept)
    t = final["test"]
    card = [
        f"# Synthetic training data — {cfg.data.dataset or 'user data'} ({cfg.arm})",
        "",
        f"{len(kept)} synthetic texts over {len(by_label)} labels, accepted by the filter chain and used to "
        f"train the final classifier (sample weight {history[-1].get('weight') if history else None}, "
        "class-balanced).",
        "",
        "## Generation",
        "",
        *(f"- model: `{m}` ({n} texts)" for m, n in models.items()),
        *(f"- template: `{k}` ({n} texts)" for k, n in templates.most_common()),
        f"- backend: `{cfg.generate.backend.kind}`; sampling: `{cfg.generate.sampling.model_dump()}`",
        "",
        "## Filters",
        "",
        f"Order: {', '.join(cfg.filter.order)}. Each candidate's decisions: `round-NN/decisions.jsonl`.",
        "",
        "## Counts per label",
        "",
        *(f"- {lab}: {n}" for lab, n in sorted(by_label.items())),
        "",
        "## Final classifier (held-out test split)",
        "",
        f"accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}, ECE {t['ece']:.4f}",
        "",
        "Each record carries its provenance: round, cluster, label pair, template and version, model, "
        "sampling and sample index.",
    ]
    write_atomic(out / "DATASET_CARD.md", "\n".join(card) + "\n")
    return out
