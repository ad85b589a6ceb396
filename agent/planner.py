"""The planner: read an uncertainty report, allocate a generation budget, choose templates, write a plan.

Modes:
- ``targeted``: units are confused label pairs (template family ``contrastive``) and (cluster, label) pairs
  (``evol_depth`` for hard clusters with real uncertain texts of that label to rewrite, ``list`` otherwise and
  always for sparse classes). Each unit's share is proportional to uncertainty × size, with a floor and a cap.
- ``rebalance``: tops up classes with fewer training texts than the largest class, same floor/cap rules.
- ``untargeted``: the budget spread uniformly over classes (a baseline).

``spread`` (0..1) reserves that share of the budget for every class, so that feeding a subset of classes does
not shift the classifier's prior against the others. The plan is JSON that a user can read, edit (counts,
templates, examples) and re-run: ``Plan.load(path)`` validates an edited file.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from activesynth.agent.config import PlannerConfig
from activesynth.agent.files import write_atomic

__all__ = ["Plan", "PlanItem", "Planner", "allocate", "examples_from_dataset"]

SCHEMA_VERSION = 1

_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the and or but if of to in on at for with from by is are was were be been am i me my we "
        "our you your it its this that these those do does did have has had can could will would should "
        "how what when where why which who not no yes there their they them as so than then just get "
        "got please hi hello thanks thank ",
    )
)


class PlanItem(BaseModel):
    """One unit of work: ``n_texts`` texts of ``label`` from ``template``, sampled ``n_samples`` times."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id within the plan (p000, p001, …).")
    label: str = Field(description="Intended label of every text.")
    family: Literal["list", "contrastive", "evol_depth", "evol_breadth"] = Field(
        description="Template family."
    )
    template: str = Field(description="Template name, name@sha12 or path to a .jinja2 file.")
    n_texts: int = Field(ge=0, description="Texts wanted (edit to change the budget of this unit).")
    n_samples: int = Field(
        ge=0, description="Model samples (prompts) to draw; derived from n_texts if edited to 0."
    )
    cluster: int | None = Field(None, description="Report cluster id, if the unit comes from a cluster.")
    pair: list[str] | None = Field(None, description="[label, confused_with] for contrastive units.")
    score: float = Field(0.0, description="Allocation weight (uncertainty x size).")
    reason: str = Field("", description="Why this unit exists and why this template.")
    examples: list[str] = Field(
        default_factory=list, description="Real examples of the label (PII-scrubbed)."
    )
    contrast_examples: list[str] = Field(
        default_factory=list, description="Real examples of the confused label."
    )
    source_texts: list[str] = Field(
        default_factory=list, description="Uncertain real texts to rewrite (evol)."
    )
    methods: list[str] = Field(default_factory=list, description="Evol in-depth methods cycled over samples.")
    cluster_description: str = Field("", description="What the report says about the cluster.")
    label_definition: str = Field("", description="A definition of the label written from its examples.")


class Plan(BaseModel):
    """A round's generation plan (``generation_plan.json``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="Plan format version.")
    created: str = Field(description="ISO 8601 time the plan was made.")
    round: int | None = Field(None, description="Round number, if known.")
    dataset: str = Field("", description="Dataset name from the report.")
    labels: list[str] = Field(default_factory=list, description="All labels of the dataset.")
    task: str = Field(description="Task description shown in prompts.")
    mode: str = Field(description="Planner mode.")
    n_texts: int = Field(description="Texts asked for in total (the sum of n_texts at planning time).")
    unallocated: int = Field(0, description="Texts left unplanned because every unit hit its cap.")
    report_sha256: str | None = Field(None, description="sha256 of the report the plan was made from.")
    config: dict[str, Any] = Field(default_factory=dict, description="The PlannerConfig used.")
    items: list[PlanItem] = Field(default_factory=list, description="Units of work.")

    @property
    def total_texts(self) -> int:
        return sum(i.n_texts for i in self.items)

    def save(self, path: str | Path) -> Path:
        return write_atomic(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def by_label(self) -> dict[str, int]:
        out: Counter = Counter()
        for i in self.items:
            out[i.label] += i.n_texts
        return dict(out)


def allocate(
    scores: list[float], total: int, floor: int = 0, cap: int | None = None, caps: list[int] | None = None
) -> list[int]:
    """Integers proportional to ``scores`` summing to at most ``total``, each 0 or in [floor, cap].

    When the budget cannot give every positive-score unit its floor, the lowest-scoring units get nothing.
    Excess over a cap is redistributed; what no unit can take is left unallocated. ``caps`` gives units
    their own (lower) caps.
    """
    n = len(scores)
    out = [0] * n
    order = sorted((i for i in range(n) if scores[i] > 0), key=lambda i: -scores[i])
    if total <= 0 or not order:
        return out
    cap = cap if cap is not None else total
    unit_cap = [min(cap, c) for c in caps] if caps is not None else [cap] * n
    floor = min(floor, cap)
    k = len(order) if floor == 0 else min(len(order), total // floor)
    active = order[:k]
    if not active:  # not even one floor fits: give it all to the top unit
        out[order[0]] = min(total, unit_cap[order[0]])
        return out
    for i in active:
        out[i] = min(floor, unit_cap[i])
    remaining = total - floor * len(active)
    open_ = [i for i in active if out[i] < unit_cap[i]]
    while remaining > 0 and open_:
        weight = sum(scores[i] for i in open_)
        shares = {i: remaining * scores[i] / weight for i in open_}
        grants = {i: min(int(math.floor(shares[i])), unit_cap[i] - out[i]) for i in open_}
        # largest remainders get the leftover units
        left = remaining - sum(grants.values())
        for i in sorted(open_, key=lambda i: -(shares[i] - math.floor(shares[i]))):
            if left <= 0:
                break
            if out[i] + grants[i] < unit_cap[i]:
                grants[i] += 1
                left -= 1
        given = 0
        for i, g in grants.items():
            out[i] += g
            given += g
        remaining -= given
        open_ = [i for i in open_ if out[i] < unit_cap[i]]
        if given == 0:
            break
    return out


def examples_from_dataset(dataset, scrub: bool = True) -> dict[str, list[str]]:
    """Real labelled texts per label from train and dev only (the pool has no labels; test stays sealed)."""
    from activesynth.agent.pii import PIIScrubber

    scrubber = PIIScrubber(enabled=scrub)
    out: dict[str, list[str]] = {}
    for split in (dataset.train, dataset.dev):
        if split is None or split.labels is None:
            continue
        for text, label in zip(split.texts, split.labels, strict=True):
            out.setdefault(label, []).append(scrubber.scrub(text).text)
    return out


def _label_text(label: str) -> str:
    return re.sub(r"[_\-]+", " ", label).strip()


def _keywords(texts: list[str], k: int = 5) -> list[str]:
    counts: Counter = Counter()
    for t in texts:
        # sorted: ties in most_common keep insertion order, which a set would make depend on the hash seed
        counts.update(sorted({w for w in re.findall(r"[a-zA-Z][a-zA-Z']{2,}", t.lower()) if w not in _STOP}))
    return [w for w, _ in counts.most_common(k)]


def _definition(label: str, examples: list[str]) -> str:
    words = _keywords(examples)
    if not words:
        return f"is about {_label_text(label)}"
    return f"is about {_label_text(label)}, typically mentioning {', '.join(words)}"


def _cluster_description(cluster: dict) -> str:
    parts = []
    if cluster.get("keywords"):
        parts.append("keywords " + ", ".join(cluster["keywords"][:6]))
    pred = cluster.get("predicted_labels") or {}
    if pred:
        top = sorted(pred.items(), key=lambda kv: -kv[1])[:3]
        parts.append("often predicted as " + ", ".join(_label_text(k) for k, _ in top))
    ex = [e["text"] for e in cluster.get("examples", [])[:2] if e.get("text")]
    if ex:
        parts.append("e.g. " + " | ".join(f'"{t}"' for t in ex))
    return "; ".join(parts)


class _Examples:
    """Real examples per label, whitespace-normalised, PII-scrubbed and de-duplicated (case-insensitive)."""

    def __init__(self, labels: list[str], examples: dict[str, list[str]] | None, cfg: PlannerConfig) -> None:
        from activesynth.agent.pii import PIIScrubber

        self.cfg = cfg
        self.scrub = PIIScrubber()
        self.pool: dict[str, list[str]] = {lab: [] for lab in labels}
        for lab, texts in (examples or {}).items():
            if lab in self.pool:
                self.pool[lab].extend(texts)

    def clean(self, texts: list[str]) -> list[str]:
        seen, out = set(), []
        for t in texts:
            t = self.scrub.scrub(" ".join(str(t).split())).text
            if t and t.casefold() not in seen:
                seen.add(t.casefold())
                out.append(t)
        return out

    def pick(self, label: str, first: list[str] = ()) -> list[str]:
        """``first``, then the label's examples in a seeded order; at most ``example_pool`` of them."""
        base = self.clean(self.pool[label])
        rng_l = random.Random(f"{self.cfg.seed}:{label}")
        rng_l.shuffle(base)
        return self.clean(list(first) + base)[: self.cfg.example_pool]


def _uncertain_by_label(report: dict, labels: list[str]) -> dict[str, list[tuple[int | None, str]]]:
    """Gold-labelled uncertain texts of the report (dev only; never test), as (cluster id, text) per label:
    they also serve as examples. Refuses a report that holds test texts."""
    out: dict[str, list[tuple[int | None, str]]] = {lab: [] for lab in labels}
    for row in report.get("selected", []):
        if row.get("split") == "test":
            raise ValueError("the report contains test texts; refusing to use them in prompts")
        if row.get("gold") in out:
            out[row["gold"]].append((row.get("cluster"), row["text"]))
    for cl in report.get("clusters", []):
        for ex in cl.get("examples", []):
            if ex.get("split") == "test":
                raise ValueError("the report contains test texts; refusing to use them in prompts")
            if ex.get("gold") in out:
                out[ex["gold"]].append((cl["id"], ex["text"]))
    return out


def _rebalance_units(labels: list[str], counts: dict[str, int]) -> list[dict]:
    """A ``list`` unit for every class with fewer training texts than the largest, capped at its gap."""
    units = []
    top = max(counts.values(), default=0)
    for lab in labels:
        gap = top - counts.get(lab, 0)
        if gap > 0:
            why = f"rebalance: {gap} below max"
            units.append(dict(label=lab, family="list", score=float(gap), cap=gap, reason=why))
    return units


class Planner:
    """``Planner(config).plan(report, examples) -> Plan`` (see module docstring)."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()

    def plan(
        self,
        report: dict,
        examples: dict[str, list[str]] | None = None,
        train_counts: dict[str, int] | None = None,
        round_index: int | None = None,
    ) -> Plan:
        """Make a plan from a report (schema_version 1) and real examples per label (train/dev/pool only).

        ``train_counts`` (training texts per label) drive rebalancing and sparseness; without them the
        report's per-class ``support`` is used.
        """
        cfg = self.config
        if report.get("schema_version") != 1:
            raise ValueError(
                f"unsupported report schema_version {report.get('schema_version')!r} (expected 1)"
            )
        labels = list(report["dataset"]["labels"])
        per_class = {c["label"]: c for c in report.get("per_class", [])}
        counts = train_counts or {lab: int(per_class.get(lab, {}).get("support") or 0) for lab in labels}
        pool = _Examples(labels, examples, cfg)
        uncertain_by_label = _uncertain_by_label(report, labels)

        units: list[dict] = []
        if cfg.mode == "targeted":
            units = self._targeted_units(report, labels, counts, uncertain_by_label)
        elif cfg.mode == "rebalance":
            units = _rebalance_units(labels, counts)
        alloc = self._allocate(units, labels, per_class)
        items = self._items(report, units, alloc, uncertain_by_label, pool)
        return Plan(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            round=round_index,
            dataset=str(report["dataset"].get("name", "")),
            labels=labels,
            task=cfg.task or _default_task(report["dataset"].get("name", "")),
            mode=cfg.mode,
            n_texts=sum(i.n_texts for i in items),
            unallocated=cfg.n_texts - sum(i.n_texts for i in items),
            report_sha256=hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest(),
            config=cfg.model_dump(mode="json"),
            items=items,
        )

    def _allocate(self, units: list[dict], labels: list[str], per_class: dict[str, dict]) -> list[int]:
        """Texts per unit, in ``units`` order; appends a ``list`` unit per class that gets a spread share."""
        cfg = self.config
        spread_share = 1.0 if cfg.mode == "untargeted" else cfg.spread
        spread_budget = (
            round(cfg.n_texts * spread_share) if units or cfg.mode == "untargeted" else cfg.n_texts
        )
        main_budget = cfg.n_texts - spread_budget
        caps = [u.get("cap", cfg.cap) for u in units]
        scores = [u["score"] * cfg.family_weights.get(u["family"], 1.0) for u in units]
        alloc = allocate(scores, main_budget, cfg.floor, cfg.cap, caps)
        unallocated = main_budget - sum(alloc)
        # spread: every class gets an even share (plus what capped units left, when spreading is on);
        # leftovers of the division go to the most uncertain classes
        spread_total = spread_budget + (unallocated if spread_share > 0 else 0)
        by_unc = sorted(labels, key=lambda lab: -float(per_class.get(lab, {}).get("mean_uncertainty") or 0))
        spread_alloc = {lab: spread_total // len(labels) for lab in labels} if labels else {}
        for lab in by_unc[: spread_total - sum(spread_alloc.values())]:
            spread_alloc[lab] += 1
        for lab in labels:
            if spread_alloc.get(lab):
                units.append(
                    dict(label=lab, family="list", score=0.0, reason="spread: every class gets a share", _n=0)
                )
                alloc.append(spread_alloc[lab])
        return alloc

    def _items(
        self,
        report: dict,
        units: list[dict],
        alloc: list[int],
        uncertain_by_label: dict[str, list[tuple[int | None, str]]],
        pool: _Examples,
    ) -> list[PlanItem]:
        """A plan item for every unit that got texts, numbered in order."""
        items: list[PlanItem] = []
        clusters = {c["id"]: c for c in report.get("clusters", [])}
        for u, n in zip(units, alloc, strict=True):
            if n <= 0:
                continue
            cl = clusters.get(u.get("cluster"))
            first = [t for c, t in uncertain_by_label[u["label"]] if cl is not None and c == cl["id"]]
            items.append(self._item(f"p{len(items):03d}", u, n, cl, first, pool))
        return items

    def _item(
        self, item_id: str, u: dict, n: int, cl: dict | None, first: list[str], pool: _Examples
    ) -> PlanItem:
        """The item of unit ``u``: ``n`` texts; ``first``: its cluster's uncertain texts of the label."""
        cfg = self.config
        lab = u["label"]
        exs = pool.pick(lab, first)
        family = u["family"]
        if not exs and family != "list":
            family = "list"
        item = PlanItem(
            id=item_id,
            label=lab,
            family=family,
            template=cfg.template_for(family),
            n_texts=n,
            n_samples=0,
            cluster=u.get("cluster"),
            pair=u.get("pair"),
            score=round(u["score"], 6),
            reason=u["reason"],
            examples=exs,
            label_definition=_definition(lab, exs),
            cluster_description=_cluster_description(cl) if cl else "",
        )
        if family == "contrastive":
            item.contrast_examples = pool.pick(u["pair"][1])[: cfg.n_examples]
        if family == "evol_depth":
            item.source_texts = pool.clean(first)
            item.methods = list(cfg.evol_methods)
        item.n_samples = self.samples_for(item)
        return item

    def samples_for(self, item: PlanItem) -> int:
        """Samples for ``item.n_texts``: a chat prompt asks for several texts, a completion yields a few."""
        from activesynth.prompts import get_template

        try:
            mode = get_template(item.template).mode
        except ValueError:
            mode = "chat" if self.config.style == "chat" else "completion"  # "auto" resolves to completion
        if item.family == "evol_depth" and mode == "completion":
            per = 1
        else:
            per = self.config.texts_per_prompt if mode == "chat" else self.config.completion_yield
        return math.ceil(item.n_texts / per) if item.n_texts else 0

    def _targeted_units(self, report, labels, counts, uncertain_by_label) -> list[dict]:
        cfg = self.config
        units: list[dict] = []
        label_set = set(labels)
        for p in report.get("confused_pairs", [])[: cfg.max_pairs]:
            a, b = p["gold"], p["predicted"]
            if a in label_set and b in label_set and a != b and p.get("count", 0) > 0:
                score = float(p["count"]) * float(p.get("mean_uncertainty") or 0.5)
                units.append(
                    dict(
                        label=a,
                        family="list" if counts.get(a, 0) < cfg.sparse_support else "contrastive",
                        pair=[a, b],
                        score=score,
                        reason=f"confused pair: {p['count']} dev texts of {a} predicted as {b}",
                    )
                )
        if cfg.class_errors:
            units += _class_error_units(report, label_set)
        clusters = report.get("clusters", [])
        uncs = sorted(float(c.get("mean_uncertainty") or 0) for c in clusters)
        threshold = uncs[min(len(uncs) - 1, int(cfg.hard_quantile * len(uncs)))] if uncs else 0.0
        for c in clusters:
            labs = c.get("gold_labels") or c.get("predicted_labels") or {}
            hard = float(c.get("mean_uncertainty") or 0) >= threshold
            for lab, n in sorted(labs.items(), key=lambda kv: -kv[1]):
                if lab not in label_set or n <= 0:
                    continue
                has_sources = any(cid == c["id"] for cid, _ in uncertain_by_label.get(lab, []))
                if counts.get(lab, 0) < cfg.sparse_support:
                    family, why = "list", "sparse class"
                elif hard and has_sources:
                    family, why = "evol_depth", "hard cluster with real uncertain texts to rewrite"
                elif hard:
                    family, why = "evol_breadth", "hard cluster"
                else:
                    family, why = "list", "uncertain cluster"
                units.append(
                    dict(
                        label=lab,
                        family=family,
                        cluster=c["id"],
                        score=float(c.get("mean_uncertainty") or 0) * n,
                        reason=f"cluster {c['id']} ({why}): {n} texts, mean uncertainty "
                        f"{float(c.get('mean_uncertainty') or 0):.3f}",
                    )
                )
        return units


def _class_error_units(report: dict, labels: set[str]) -> list[dict]:
    """A list unit per class with dev errors, scored errors × mean uncertainty."""
    units = []
    for row in report.get("per_class", []):
        errors = round(float(row.get("dev_error_rate") or 0) * int(row.get("support") or 0))
        if row["label"] in labels and errors > 0:
            units.append(
                dict(
                    label=row["label"],
                    family="list",
                    score=errors * float(row.get("mean_uncertainty") or 0.5),
                    reason=f"class with {errors} dev errors",
                )
            )
    return units


def _default_task(dataset_name: str) -> str:
    name = dataset_name.lower()
    if "bank" in name:
        return "Messages that customers send to their bank's support chat"
    if "clinc" in name or "hwu" in name:
        return "Requests that users say or type to a virtual assistant"
    if "rotten" in name or "sentiment" in name:
        return "Short snippets from film reviews"
    return "Short texts, each labelled with its category"
