"""The chain (every evaluator judges every candidate), FilterConfig and the report."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from activesynth.agent.config import DEFAULT_ORDER, ConfigError, FilterConfig, RougeLOptions, override
from activesynth.evaluators.base import (
    Candidate,
    Decision,
    Evaluator,
    FilterContext,
    Verdict,
    register,
    registry,
)
from activesynth.evaluators.chain import FilterChain, discover, filter_report
from activesynth.evaluators.pii_filter import PIIFilter
from activesynth.evaluators.quality import QualityRules
from activesynth.evaluators.rouge import RougeLFilter


@register("test_shout")
class ShoutFilter(Evaluator):
    """A plugin for the tests: drops texts in capitals."""

    min_upper: float = 0.8

    def judge(self, candidates, context):
        out = []
        for c in candidates:
            letters = [ch for ch in c.text if ch.isalpha()] or ["a"]
            share = sum(ch.isupper() for ch in letters) / len(letters)
            out.append(
                self.drop("shouting: caps", share)
                if share >= self.min_upper
                else self.keep("calm: ok", share)
            )
        return out


def cand(i, text, label="card_arrival", **kw):
    return Candidate.from_record({"id": f"c{i}", "text": text, "label": label, **kw})


def test_every_field_documented_and_strict():
    def check(model: type[BaseModel], path: str) -> None:
        assert model.model_config.get("extra") == "forbid", path
        for name, field in model.model_fields.items():
            assert field.description, f"{path}.{name} lacks a description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                check(ann, f"{path}.{name}")

    check(FilterConfig, "FilterConfig")
    with pytest.raises(ValidationError):
        FilterConfig.model_validate({"rouge_l": {"max_f": 0.7, "typo": 1}})
    with pytest.raises(ValidationError):
        FilterConfig.model_validate({"colour": "red"})
    with pytest.raises(ValueError, match="unknown evaluator"):
        FilterChain.from_config(FilterConfig(order=["quality", "leakage", "nope"]))
    with pytest.raises(ValidationError, match="leakage guard"):
        FilterConfig(order=["quality"])
    assert FilterConfig(order=["quality"], leakage_guard=False).order == ["quality"]
    with pytest.raises(ValidationError, match="twice"):
        FilterConfig(order=["quality", "quality"])
    with pytest.raises(ValidationError):
        FilterConfig.model_validate({"rouge_l": {"max_f": 1.5}})


def test_an_evaluator_is_its_settings():
    """Each default is declared once: the built-in evaluators subclass their settings models."""
    discover()
    assert issubclass(registry["rouge_l"], RougeLOptions) and RougeLFilter().max_f == RougeLOptions().max_f
    for name in DEFAULT_ORDER:
        settings = FilterConfig().settings_for(name)
        assert registry[name](**settings).model_dump() == settings
    with pytest.raises(ValidationError):
        RougeLFilter(max_f=1.5)


def test_overrides():
    cfg = override(FilterConfig(), {"rouge_l.max_f": 0.8})
    assert cfg.rouge_l.max_f == 0.8 and cfg.embedding_dedup.max_cosine == 0.95
    assert FilterChain.from_config(cfg).evaluators[DEFAULT_ORDER.index("rouge_l")].max_f == 0.8
    with pytest.raises(ConfigError, match="rouge_l.bogus: unknown setting"):
        override(FilterConfig(), {"rouge_l.bogus": 1})


def test_plugin_registered_by_its_file():
    assert registry["test_shout"] is ShoutFilter
    cfg = FilterConfig(order=["test_shout", "leakage"], plugins={"test_shout": {"min_upper": 0.5}})
    chain = FilterChain.from_config(cfg)
    assert chain.order == ["test_shout", "leakage"] and chain.evaluators[0].min_upper == 0.5
    bad = FilterConfig(order=["test_shout", "leakage"], plugins={"test_shout": {"bogus": 1}})
    with pytest.raises(ValueError, match="filter.test_shout: bogus: unknown setting"):
        FilterChain.from_config(bad)


def test_chain_records_all_decisions_and_unusable():
    chain = FilterChain([QualityRules(), ShoutFilter(), RougeLFilter()])
    cands = [
        cand(0, "Where is my new card?"),
        cand(1, "WHERE IS MY NEW CARD?"),  # dropped by shout, then still judged by rouge
        cand(2, "Here's a message: where is my card?"),
        cand(3, "", status="unusable", reason="no list item found"),
        cand(4, "Where is my new card?"),  # duplicate of c0
    ]
    out = chain.run(cands, FilterContext())
    assert [r.accepted for r in out.results] == [True, False, False, False, False]
    for r in out.results[:3] + out.results[4:]:
        assert [d.evaluator for d in r.decisions] == ["quality", "test_shout", "rouge_l"]
    assert out.results[3].decisions == [
        Decision("parser", Verdict.DROP, None, "unusable: no list item found")
    ]
    # c1 was dropped before rouge_l: rouge_l still scored it (1.0 vs c0), but it never joined the references
    assert out.results[1].decisions[2].verdict == Verdict.DROP
    assert out.results[4].decisions[2].reason.endswith("candidate c0 of this batch")
    rec = out.results[0].to_dict()
    assert set(rec) == {"id", "accepted", "decisions"}
    assert set(rec["decisions"][0]) == {"evaluator", "verdict", "score", "reason"}


def test_review_policy_and_rewrites():
    @register("test_flag")
    class Flag(Evaluator):
        def judge(self, candidates, context):
            return [self.review("unsure: maybe") for _ in candidates]

    cands = [cand(0, "mail me at jo@example.org about my card")]
    accept = FilterChain([PIIFilter(mode="scrub"), Flag()], accept_review=True).run(cands, FilterContext())
    reject = FilterChain([PIIFilter(mode="scrub"), Flag()], accept_review=False).run(cands, FilterContext())
    assert accept.results[0].accepted and not reject.results[0].accepted
    record = accept.results[0].accepted_record()
    assert record["text"] == "mail me at [EMAIL] about my card" and record["review"] is True
    assert cands[0].text == "mail me at jo@example.org about my card"  # input left alone
    del registry["test_flag"]


def test_report_counts_and_examples():
    chain = FilterChain([QualityRules(), RougeLFilter()])
    texts = ["Where is my card?"] * 4 + ["hi", "Sure, here you go", "How do I top up by card?"]
    out = chain.run([cand(i, t) for i, t in enumerate(texts)], FilterContext())
    rep = filter_report(out, round_index=2, examples=2)
    assert rep["n_candidates"] == 7 and rep["n_accepted"] == 2 and rep["n_dropped"] == 5
    assert rep["first_drops"] == {
        "quality/too_short": 1,
        "quality/meta_reply": 1,
        "rouge_l/near_duplicate": 3,
    }
    assert sum(rep["first_drops"].values()) == rep["n_dropped"]
    dup = next(r for r in rep["reasons"] if r["code"] == "near_duplicate")
    assert dup["count"] == 3 and len(dup["examples"]) == 2
    assert rep["by_evaluator"]["quality"] == {"keep": 5, "drop": 2}
    assert rep["per_label"]["card_arrival"] == {"candidates": 7, "accepted": 2}


def test_report_withholds_texts_near_test():
    class Near(Evaluator):
        name = "test_near"

        def judge(self, candidates, context):
            return [self.drop("near_test: near a held-out test text (rougeL=0.90)", 0.9) for _ in candidates]

    out = FilterChain([Near()]).run([cand(0, "secret-ish text")], FilterContext())
    rep = filter_report(out)
    assert "secret-ish" not in str(rep)


def test_chain_rejects_wrong_decision_count():
    class Broken(Evaluator):
        name = "test_broken"

        def judge(self, candidates, context):
            return []

    with pytest.raises(RuntimeError, match="0 decisions for 1"):
        FilterChain([Broken()]).run([cand(0, "Where is my card?")], FilterContext())


def test_candidate_record_validation():
    with pytest.raises(ValueError, match="lacks label"):
        Candidate.from_record({"id": "x", "text": "t"})
    with pytest.raises(ValueError, match="strings"):
        Candidate.from_record({"id": "x", "text": None, "label": "a"})


def test_a_relabel_reaches_later_evaluators_and_the_accepted_record():
    @register("test_relabel")
    class Relabel(Evaluator):
        def judge(self, candidates, context):
            return [
                Decision(self.name, Verdict.KEEP, None, "relabeled: sure", relabel="card_delivery_estimate")
                for _ in candidates
            ]

    @register("test_seen")
    class Seen(Evaluator):
        def judge(self, candidates, context):
            return [self.keep(f"seen: {c.label}") for c in candidates]

    cands = [cand(0, "When will my card get here?")]
    out = FilterChain([Relabel(), Seen()]).run(cands, FilterContext())
    assert out.results[0].decisions[1].reason == "seen: card_delivery_estimate"
    record = out.results[0].accepted_record()
    assert record["label"] == "card_delivery_estimate" and record["relabeled_from"] == "card_arrival"
    assert cands[0].label == "card_arrival" and "relabeled_from" not in cands[0].record  # input left alone
    del registry["test_relabel"], registry["test_seen"]


def test_chain_reports_progress_per_evaluator():
    """Long filtering is never silent: a line after the first evaluator and a final one with the count."""
    lines: list[str] = []
    chain = FilterChain([QualityRules(), ShoutFilter(), RougeLFilter()])
    cands = [cand(0, "Where is my new card?"), cand(1, "WHERE IS MY NEW CARD?"), cand(2, "Card not here yet")]
    chain.run(cands, FilterContext(), progress=lines.append)
    assert (
        lines[0].startswith("filtering 3 candidates 1/3 evaluators")
        and "quality done · 3 still in" in lines[0]
    )
    assert lines[-1].startswith("filtering 3 candidates 3/3 evaluators") and "2 accepted" in lines[-1]
    assert "took " in lines[-1]
