"""Label agreement with a real HeadEnsemble trained on a real BANKING77 slice."""

from __future__ import annotations

import pytest

from activesynth.evaluators.base import Candidate, FilterContext, Verdict
from activesynth.evaluators.label_agreement import LabelAgreement, parse_judge_answer

pytestmark = pytest.mark.slow


def cands(pairs):
    return [Candidate(f"c{i}", t, lab) for i, (t, lab) in enumerate(pairs)]


def test_real_dev_texts_mostly_kept(ensemble, banking_dev, shot_labels):
    pairs = [(t, lab) for t, lab in banking_dev if lab in shot_labels][:60]
    out = LabelAgreement().judge(cands(pairs), FilterContext(classifier=ensemble, labels=shot_labels))
    kept = sum(d.verdict == Verdict.KEEP for d in out)
    assert kept >= 0.75 * len(pairs)
    # the same texts with a wrong label are mostly dropped
    shifted = [(t, shot_labels[(shot_labels.index(lab) + 1) % len(shot_labels)]) for t, lab in pairs]
    out = LabelAgreement().judge(cands(shifted), FilterContext(classifier=ensemble, labels=shot_labels))
    assert sum(d.verdict == Verdict.DROP for d in out) >= 0.9 * len(pairs)


def test_margin_catches_a_text_written_for_the_wrong_label(ensemble):
    # Written "for" receiving_money, but it asks how to send money: a low probability bar lets it through,
    # the margin over the most confusable label (transfer_into_account) does not.
    text = "How do I transfer funds to another person's account?"
    la = LabelAgreement(min_prob=0.05, min_margin=-0.1)
    s = la.scores([text], ["receiving_money"], ensemble)
    assert s["p"][0] >= 0.05
    assert ensemble.classes_[s["rival"][0]] == "transfer_into_account" and s["margin"][0] < -0.1
    d = la.judge(cands([(text, "receiving_money")]), FilterContext(classifier=ensemble))[0]
    assert d.verdict == Verdict.DROP and d.code == "confusable"
    assert "over transfer_into_account" in d.reason
    plain = LabelAgreement(min_prob=0.05, min_margin=-1).judge(
        cands([(text, "receiving_money")]), FilterContext(classifier=ensemble)
    )[0]
    assert plain.verdict == Verdict.KEEP
    # and with its own label it passes the default check
    ok = LabelAgreement().judge(cands([(text, "transfer_into_account")]), FilterContext(classifier=ensemble))[
        0
    ]
    assert ok.verdict == Verdict.KEEP and ok.code == "agrees"


def test_rank_mode(ensemble):
    pairs = [("My card still hasn't arrived, when will it come?", "card_arrival")]
    d = LabelAgreement(mode="rank", top_k=1, min_margin=-1).judge(
        cands(pairs), FilterContext(classifier=ensemble)
    )
    assert d[0].verdict == Verdict.KEEP and "rank 1" in d[0].reason
    wrong = [("My card still hasn't arrived, when will it come?", "exchange_rate")]
    d = LabelAgreement(mode="rank", top_k=1, min_margin=-1).judge(
        cands(wrong), FilterContext(classifier=ensemble)
    )
    assert d[0].verdict == Verdict.DROP and d[0].code == "low_rank"


def test_llm_judge_disagreement_is_review(ensemble, shot_labels):
    pairs = [
        ("My card still hasn't arrived, when will it come?", "card_arrival"),  # classifier keeps
        ("What is today's exchange rate for euros?", "card_arrival"),  # classifier drops
        ("My card still hasn't arrived, when will it come?", "card_arrival"),
        ("Where is my card?", "card_arrival"),
    ]
    answers = iter(["exchange_rate", "Card arrival", "card_arrival\nbecause it is about delivery", "??"])
    calls = []

    def judge(text, label, labels):
        calls.append((text, label))
        assert "card_arrival" in labels
        return next(answers)

    ctx = FilterContext(classifier=ensemble, labels=shot_labels, llm_judge=judge)
    out = LabelAgreement().judge(cands(pairs), ctx)
    assert [d.verdict for d in out] == [Verdict.REVIEW, Verdict.REVIEW, Verdict.KEEP, Verdict.KEEP]
    assert out[0].code == "llm_disagrees" and out[1].code == "llm_overrules"
    assert "llm judge agrees" in out[2].reason and "unclear" in out[3].reason
    # candidates an earlier evaluator dropped are not sent to the judge
    calls.clear()
    ctx = FilterContext(classifier=ensemble, labels=shot_labels, llm_judge=judge, active=[False])
    out = LabelAgreement().judge(cands(pairs[:1]), ctx)
    assert calls == [] and "skipped" in out[0].reason


def test_llm_judge_failure_keeps_record(ensemble):
    def broken(text, label, labels):
        raise TimeoutError("backend down")

    ctx = FilterContext(classifier=ensemble, llm_judge=broken)
    d = LabelAgreement().judge(cands([("Where is my card?", "card_arrival")]), ctx)[0]
    assert d.verdict in (Verdict.KEEP, Verdict.DROP) and "llm judge failed (TimeoutError)" in d.reason


def test_errors_and_edges(ensemble):
    with pytest.raises(ValueError, match="unknown to the classifier"):
        LabelAgreement().judge(cands([("hi there", "no_such_label")]), FilterContext(classifier=ensemble))
    with pytest.raises(ValueError, match="needs a classifier"):
        LabelAgreement().judge(cands([("hi there", "card_arrival")]), FilterContext())
    assert LabelAgreement().judge([], FilterContext(classifier=ensemble)) == []
    out = LabelAgreement().judge(
        cands([("", "card_arrival"), ("é" * 5000, "card_arrival"), ("我的卡", "card_arrival")]),
        FilterContext(classifier=ensemble),
    )
    assert len(out) == 3 and all(d.score is not None for d in out)


def test_parse_judge_answer():
    labels = ["card_arrival", "exchange_rate", "card_linking"]
    assert parse_judge_answer("card_arrival", labels) == "card_arrival"
    assert parse_judge_answer("Label: Card Arrival.", labels) == "card_arrival"
    assert parse_judge_answer("I think it is exchange_rate here", labels) == "exchange_rate"
    assert parse_judge_answer("card_arrival or card_linking", labels) is None
    assert parse_judge_answer("", labels) is None
