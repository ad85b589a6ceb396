"""The LLM judge as a filter (``llm_judge``): its verdicts as decisions, relabelling when judge and classifier
agree, answers kept in the run's LLM cache (scripted backend); the run's own generator settings through
``filter_run`` are tested with the real local model in test_ev_filtering.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from activesynth.agent.config.filters import FilterConfig
from activesynth.agent.llm.protocol import Result
from activesynth.evaluators.base import Candidate, FilterContext, Verdict
from activesynth.evaluators.chain import FilterChain
from activesynth.evaluators.judge import LLMJudgeCheck
from tests.fakes import ScriptedBackend

CLASSES = ["card_arrival", "card_delivery_estimate", "exchange_rate", "top_up_failed"]


class StubClassifier:
    """Puts every text in the class its table names (probability 0.7, the rest spread)."""

    classes_ = np.array(CLASSES)

    def __init__(self, top: dict[str, str]):
        self.top = top

    def predict_proba(self, texts):
        out = np.full((len(texts), len(CLASSES)), 0.1)
        for i, t in enumerate(texts):
            out[i, CLASSES.index(self.top[t])] = 0.7
        return out


def answering(table: dict[str, str | None]):
    """A judge that picks the label ``table[text]`` (None: no usable answer), with probability 0.8."""

    def answer(req, i, n_call):
        meta = dict(req.meta)
        options = json.loads(meta["options"])
        chosen = table[next(c.text for c in CANDS if c.id == meta["item"])]
        if chosen is None:
            return Result(req.id, i, text="hmm", finish_reason="stop")
        letter = req.choices[options.index(chosen)]
        rest = 0.2 / (len(options) - 1)
        lps = {le: math.log(0.8 if le == letter else rest) for le in req.choices}
        return Result(req.id, i, text=letter, finish_reason="stop", choice_logprobs=lps)

    return answer


CANDS = [
    Candidate("c0", "my card never came", "card_arrival"),  # judge agrees
    Candidate("c1", "what is the rate for euros", "card_arrival"),  # judge and classifier: exchange_rate
    Candidate("c2", "how long does delivery take", "card_arrival"),  # judge alone: card_delivery_estimate
    Candidate("c3", "top up did not work", "top_up_failed"),  # judge gives no answer
]
JUDGE = {
    CANDS[0].text: "card_arrival",
    CANDS[1].text: "exchange_rate",
    CANDS[2].text: "card_delivery_estimate",
    CANDS[3].text: None,
}
TOP = {
    CANDS[0].text: "card_arrival",
    CANDS[1].text: "exchange_rate",
    CANDS[2].text: "card_arrival",
    CANDS[3].text: "top_up_failed",
}


@pytest.fixture
def context(tmp_path):
    backend = ScriptedBackend(answering(JUDGE), model_id="scripted:judge")
    return FilterContext(
        labels=CLASSES,
        classifier=StubClassifier(TOP),
        generator=backend,
        task="Customer messages to a bank",
        llm_cache=tmp_path / "llm_cache.sqlite",
    )


def test_verdicts_become_decisions(context):
    got = LLMJudgeCheck(rivals=2).judge(CANDS, context)
    assert [d.verdict for d in got] == [Verdict.KEEP, Verdict.KEEP, Verdict.DROP, Verdict.KEEP]
    assert got[0].reason == "judge_agrees: card_arrival" and got[0].relabel is None
    assert got[1].relabel == "exchange_rate" and "classifier agrees" in got[1].reason
    assert got[2].reason.startswith("judge_disagrees: judge says card_delivery_estimate (0.80)")
    assert got[3].reason.startswith("not_checked: judge unsure") and got[3].relabel is None
    assert got[0].score == pytest.approx(0.8)


def test_on_disagree_review_or_relabel(context):
    review = LLMJudgeCheck(rivals=2, on_disagree="review").judge(CANDS, context)[2]
    assert review.verdict == Verdict.REVIEW and review.code == "judge_disagrees"
    relabel = LLMJudgeCheck(rivals=2, on_disagree="relabel").judge(CANDS, context)[2]
    assert relabel.verdict == Verdict.KEEP and relabel.relabel == "card_delivery_estimate"
    assert "classifier agrees" not in relabel.reason


def test_the_chain_relabels_and_answers_come_from_the_run_cache(context):
    config = FilterConfig.model_validate(
        {"order": ["leakage", "llm_judge"], "llm_judge": {"rivals": 2}, "leakage": {}}
    )
    chain = FilterChain.from_config(config)
    outcome = chain.run(CANDS, context)
    accepted = {r.candidate.id: r.accepted_record() for r in outcome.accepted}
    assert set(accepted) == {"c0", "c1", "c3"}
    assert accepted["c1"]["label"] == "exchange_rate"
    assert accepted["c1"]["relabeled_from"] == "card_arrival"
    assert "relabeled_from" not in accepted["c0"]
    asked = context.generator.calls
    assert asked == 4 and context.llm_cache.exists()
    again = chain.run(CANDS, context)  # the same questions: answered from the cache
    assert context.generator.calls == asked
    assert [r.accepted for r in again.results] == [r.accepted for r in outcome.results]


def test_nothing_to_ask_with_is_not_checked():
    got = LLMJudgeCheck().judge(CANDS[:1], FilterContext(classifier=StubClassifier(TOP)))
    assert got[0].verdict == Verdict.KEEP and got[0].reason.startswith("not_checked: no judge backend")
    got = LLMJudgeCheck().judge(CANDS[:1], FilterContext())
    assert got[0].reason.startswith("not_checked: no classifier")
    assert LLMJudgeCheck().judge([], FilterContext()) == []


def test_settings_are_the_judge_config():
    cfg = FilterConfig.model_validate({"llm_judge": {"rivals": 3, "on_disagree": "review"}})
    assert cfg.settings_for("llm_judge")["rivals"] == 3
    with pytest.raises(ValueError, match="on_disagree"):
        FilterConfig.model_validate({"llm_judge": {"on_disagree": "shout"}})


def test_the_judges_own_backend_is_set_by_dotted_overrides():
    from activesynth.agent.config.base import ConfigError, override

    cfg = override(
        FilterConfig(), {"llm_judge.backend.kind": "local", "llm_judge.backend.model": "qwen2.5-coder-1.5b"}
    )
    assert cfg.llm_judge.backend.kind == "local" and cfg.llm_judge.backend.model == "qwen2.5-coder-1.5b"
    assert override(cfg, {"llm_judge.backend": None}).llm_judge.backend is None  # back to the generator's
    with pytest.raises(ConfigError, match=r"backend: say which kind first \(llm_judge.backend.kind\)"):
        override(FilterConfig(), {"llm_judge.backend.model": "x"})
    with pytest.raises(ConfigError, match="llm_judge.nothing: unknown section"):
        override(FilterConfig(), {"llm_judge.nothing.x": 1})
