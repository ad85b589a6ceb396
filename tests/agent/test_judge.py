"""The LLM label judge: parsing, prompts, batching, decisions, the call cache, and real backends (the local
model through llama.cpp, an OpenAI-compatible fault server and llama-cpp-python's own server on loopback)."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from activesynth.agent.config.judge import JudgeConfig
from activesynth.agent.judge import (
    JudgeItem,
    LabelJudge,
    as_filter_judge,
    judge_template,
    make_judge,
    parse_choice,
    rivals_from_proba,
)
from activesynth.agent.llm import LocalConfig, OpenAIConfig
from activesynth.agent.llm.cache import CachedBackend, LLMCache
from activesynth.agent.llm.protocol import GenerationRequest, Result, SamplingParams
from activesynth.agent.llm.usage import UsageMeter
from activesynth.evaluators.label_agreement import parse_judge_answer
from activesynth.prompts import get_template
from tests.agent.llm.conftest import FaultServer, llama_server  # noqa: F401 - a fixture used below
from tests.fakes import ScriptedBackend

LETTERS = ("A", "B", "C", "D", "E")
EXAMPLES = {
    "card_arrival": ["Where is my new card?", "My card still has not arrived."],
    "card_delivery_estimate": ["How long does card delivery take?"],
    "exchange_rate": ["What exchange rate do you use?"],
    "top_up_failed": ["My top-up did not go through."],
    "lost_or_stolen_card": ["I lost my card yesterday."],
}
TASK = "Messages that customers send to their bank"


# -- parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("A", "A"),
        (" B", "B"),
        ("C)", "C"),
        ("(D) exchange rate", "D"),
        ("Answer: B", "B"),
        ("The answer is C.", "C"),
        ("I think E", "E"),  # "I" is no option among five
        ("b.", "B"),
        ("  \n\nA\nB", "A"),  # the first non-empty line decides
        ("F", None),  # a letter that is not an option
        ("", None),
        ("   ", None),
        ("Hello there", None),
        ("synthetic text 1.0", None),
        ("exchange rate", "B"),  # the option's label spelled out
        ("exchange_rate", "B"),
        ("label: Exchange Rate.", "B"),
    ],
)
def test_parse_choice(answer, expected):
    options = ("card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card", "card_linking")
    assert parse_choice(answer, LETTERS, options) == expected


def test_parse_choice_never_raises_on_odd_input():
    for odd in (None, 3, b"A", "\x00\x1b[31mA", "🙂"):
        parse_choice(odd, LETTERS)  # no exception, whatever it returns


# -- prompts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, mode", [("judge_choice", "chat"), ("judge_choice_completion", "completion")])
def test_judge_templates_render_in_the_sandbox(name, mode):
    t = get_template(name)
    assert t.mode == mode and t.family == "judge" and t.description
    assert set(t.variables) == {"task", "text", "options", "examples", "letters"}
    judge = LabelJudge(
        ScriptedBackend(), JudgeConfig(examples_per_option=1), examples=EXAMPLES, task=TASK, template=t
    )
    q = judge._question(0, JudgeItem("where is my card??", "card_arrival", ("card_delivery_estimate",)))
    req = q.request
    text = req.prompt if mode == "completion" else "\n".join(c for _, c in req.messages)
    assert req.choices == ("A", "B") and req.template == name and req.template_version == t.version
    assert req.sampling.max_tokens == 1 and req.sampling.temperature == 0.0
    # readable labels, lettered, with one real example each, the text, and the letters to answer with
    by_letter = dict(zip(q.letters, q.options, strict=True))
    for letter, label in by_letter.items():
        assert f"{letter}) {label.replace('_', ' ')}" in text
    assert '"Where is my new card?"' in text and '"How long does card delivery take?"' in text
    assert "My card still has not arrived." not in text  # only examples_per_option of them
    assert '"where is my card??"' in text and "A or B" in text and TASK in text
    if mode == "chat":
        assert [r for r, _ in req.messages] == ["system", "user"]
    else:
        assert text.endswith("Answer:") and req.sampling.stop == ["\n"]


def test_long_texts_are_cut_and_kept_on_one_line():
    cfg = JudgeConfig(examples_per_option=1, example_chars=20, text_chars=30)
    long_example = {"card_arrival": ["word " * 50], "exchange_rate": ["short one"]}
    judge = LabelJudge(ScriptedBackend(), cfg, examples=long_example)
    q = judge._question(0, JudgeItem("line one\nline two " + "x" * 100, "card_arrival", ("exchange_rate",)))
    user = q.request.messages[-1][1]
    message = next(ln for ln in user.splitlines() if ln.startswith("Message:"))
    assert message == 'Message: "line one line two xxxxxxxxxxx…"'
    assert '"word word word word…"' in user and '"short one"' in user


def test_template_style_follows_the_backend():
    class Local:  # a local model without a chat template (a base model)
        name, model_id, chat_template = "local", "local:x", None

    class LocalChat(Local):
        chat_template = "{{ messages }}"

    assert judge_template(JudgeConfig(), Local()).name == "judge_choice_completion"
    assert judge_template(JudgeConfig(), LocalChat()).name == "judge_choice"
    assert judge_template(JudgeConfig(), ScriptedBackend()).name == "judge_choice"
    assert (
        judge_template(JudgeConfig(style="completion"), ScriptedBackend()).name == "judge_choice_completion"
    )
    assert judge_template(JudgeConfig(template="judge_choice"), Local()).name == "judge_choice"


def test_option_order_does_not_reveal_the_intended_label():
    judge = LabelJudge(ScriptedBackend(), JudgeConfig(rivals=2))
    a = judge.options_for(JudgeItem("t", "card_arrival", ("exchange_rate", "top_up_failed")))
    b = judge.options_for(JudgeItem("t", "exchange_rate", ("top_up_failed", "card_arrival", "x")))
    assert sorted(a) == sorted(b) == ["card_arrival", "exchange_rate", "top_up_failed"]
    assert a == b  # same set, same order, whichever label is the intended one
    alpha = LabelJudge(ScriptedBackend(), JudgeConfig(rivals=2, option_order="alphabetical"))
    assert alpha.options_for(JudgeItem("t", "top_up_failed", ("exchange_rate", "card_arrival"))) == (
        "card_arrival",
        "exchange_rate",
        "top_up_failed",
    )
    # rivals are cut to config.rivals, and the intended label is never offered twice
    assert len(judge.options_for(JudgeItem("t", "a", ("a", "b", "c", "d")))) == 3


def test_rivals_from_proba():
    classes = ["a", "b", "c", "d"]
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.15, 0.05]])
    assert rivals_from_proba(proba, classes, ["d", "d"], 2) == [("c", "b"), ("a", "c")]


def test_config_is_strict_and_documented():
    with pytest.raises(ValidationError):
        JudgeConfig(rivalz=3)
    with pytest.raises(ValidationError):
        JudgeConfig(rivals=0)
    for name, f in JudgeConfig.model_fields.items():
        assert f.description, name
    cfg = JudgeConfig.model_validate({"backend": {"kind": "local", "model": "gemma3-270m"}})
    assert cfg.backend.kind == "local" and cfg.temperature == 0.0 and cfg.max_tokens == 1


# -- batching and decisions with the scripted backend -------------------------------------------------------


def choosing(pick, logprobs=True):
    """An answer that picks ``pick(intended label, options)``; with log-probs that give the picked option 0.7
    and spread the rest evenly over the other options."""

    def answer(req, i, n_call):
        options = json.loads(dict(req.meta)["options"])
        chosen = pick(dict(req.meta)["label"], options)
        if chosen is None:
            return Result(req.id, i, text="no idea, sorry", finish_reason="stop")
        letter = req.choices[options.index(chosen)]
        lps = None
        if logprobs:
            rest = 0.3 / (len(options) - 1)
            lps = {le: math.log(0.7 if le == letter else rest) for le in req.choices}
        return Result(req.id, i, text=letter, finish_reason="stop", choice_logprobs=lps)

    return answer


class CountingBackend(ScriptedBackend):
    """Remembers the request lists of each ``generate`` call."""

    def __init__(self, answer, model_id="scripted:judge"):
        super().__init__(answer, model_id)
        self.batches: list[list[GenerationRequest]] = []

    def generate(self, requests, on_result=None):
        self.batches.append(list(requests))
        return super().generate(requests, on_result)


ITEMS = [
    JudgeItem("my card never came", "card_arrival", ("card_delivery_estimate", "lost_or_stolen_card"), "c1"),
    JudgeItem("how long until it comes", "card_arrival", ("card_delivery_estimate", "exchange_rate"), "c2"),
    JudgeItem("rate for euros?", "exchange_rate", ("top_up_failed", "card_arrival"), "c3"),
]


def test_one_request_per_text_in_one_call_sorted_by_prompt():
    be = CountingBackend(choosing(lambda label, options: label))
    verdicts = LabelJudge(be, JudgeConfig(), task=TASK).judge(ITEMS)
    assert len(be.batches) == 1 and len(be.batches[0]) == 3
    sent = be.batches[0]
    texts = ["\n".join(c for _, c in r.messages) for r in sent]
    assert texts == sorted(texts)  # consecutive prompts share their longest prefix
    assert all(r.messages[0] == sent[0].messages[0] for r in sent)  # the shared instruction comes first
    assert [v.id for v in verdicts] == ["c1", "c2", "c3"]  # back in the items' order
    assert all(v.decision == "agree" and v.agrees and v.choice == v.label for v in verdicts)
    v = verdicts[0]
    assert v.confidence == pytest.approx(0.7) and v.p_label == pytest.approx(0.7)
    assert sum(v.probs.values()) == pytest.approx(1.0) and v.mass == pytest.approx(1.0)
    assert v.template == get_template("judge_choice").ref and v.model == "scripted:judge"
    assert json.loads(json.dumps(v.to_json()))["options"] == list(v.options)


def test_batches_follow_batch_size():
    be = CountingBackend(choosing(lambda label, options: label))
    LabelJudge(be, JudgeConfig(batch_size=2)).judge(ITEMS)
    assert [len(b) for b in be.batches] == [2, 1]


def test_disagreement_needs_confidence_to_overrule():
    def other(label, options):
        return next(o for o in options if o != label)

    sure = LabelJudge(CountingBackend(choosing(other)), JudgeConfig(min_confidence=0.6)).judge(ITEMS)
    assert all(v.decision == "disagree" and v.agrees is False and v.relabel == v.choice for v in sure)
    unsure = LabelJudge(CountingBackend(choosing(other)), JudgeConfig(min_confidence=0.8)).judge(ITEMS)
    assert all(v.decision == "unsure" and v.relabel is None and v.choice != v.label for v in unsure)
    # without log-probabilities a disagreement overrules only when min_confidence is 0
    bare = CountingBackend(choosing(other, logprobs=False))
    assert {v.decision for v in LabelJudge(bare, JudgeConfig()).judge(ITEMS)} == {"unsure"}
    bare = CountingBackend(choosing(other, logprobs=False))
    assert {v.decision for v in LabelJudge(bare, JudgeConfig(min_confidence=0)).judge(ITEMS)} == {"disagree"}


def test_unusable_answers_and_failures_are_unsure_never_exceptions():
    def answer(req, i, n_call):
        label = dict(req.meta)["label"]
        if label == "exchange_rate":
            return Result(req.id, i, error="HTTPError (HTTP 500)")
        return Result(req.id, i, text="I cannot tell", finish_reason="stop")

    items = [*ITEMS, JudgeItem("lonely", "card_arrival", (), "c4")]
    verdicts = LabelJudge(CountingBackend(answer), JudgeConfig()).judge(items)
    assert [v.decision for v in verdicts] == ["unsure"] * 4
    assert verdicts[0].choice is None and verdicts[0].answer == "I cannot tell" and verdicts[0].error is None
    assert "HTTP 500" in verdicts[2].error
    assert verdicts[3].error == "no rival labels to choose from" and verdicts[3].options == ("card_arrival",)

    class Broken(ScriptedBackend):
        def generate(self, requests, on_result=None):
            raise RuntimeError("server went away")

    verdicts = LabelJudge(Broken(), JudgeConfig()).judge(ITEMS)
    assert all(v.decision == "unsure" and "server went away" in v.error for v in verdicts)


def test_log_probabilities_decide_when_the_text_has_no_letter():
    def answer(req, i, n_call):  # an empty first token, but the letters' log-probs came back
        return Result(req.id, i, text="\n", choice_logprobs={"A": -3.0, "B": -0.5})

    item = JudgeItem("rate for euros?", "exchange_rate", ("top_up_failed",))
    [v] = LabelJudge(ScriptedBackend(answer), JudgeConfig()).judge([item])
    assert v.letter == "B" and v.choice == v.options[1]
    assert v.probs[v.options[1]] == pytest.approx(1 / (1 + math.exp(-2.5)))
    assert v.mass == pytest.approx(math.exp(-3.0) + math.exp(-0.5))


def test_batch_calibration_removes_a_letter_preference():
    """A model that likes letter A (+2 nats) but knows the label (+1 nat): raw answers are mostly A, the
    calibrated ones the intended label; with fewer texts than calibrate_min nothing changes."""

    def biased(req, i, n_call):
        options = json.loads(dict(req.meta)["options"])
        label = dict(req.meta)["label"]
        pairs = list(zip(req.choices, options, strict=True))
        logits = np.array([2.0 * (le == "A") + 1.0 * (o == label) for le, o in pairs])
        lps = logits - np.log(np.exp(logits).sum())
        letter = req.choices[int(np.argmax(lps))]
        return Result(
            req.id, i, text=letter, choice_logprobs=dict(zip(req.choices, lps.tolist(), strict=True))
        )

    labels = [f"intent_{k}" for k in range(12)]
    items = [
        JudgeItem(f"text {k}", labels[k % 12], tuple(labels[(k + d) % 12] for d in (1, 3, 5)))
        for k in range(40)
    ]
    raw = LabelJudge(ScriptedBackend(biased), JudgeConfig(rivals=3)).judge(items)
    assert np.mean([v.agrees for v in raw]) < 0.5 and all(v.letter == "A" for v in raw if not v.agrees)
    cfg = JudgeConfig(rivals=3, calibrate="batch", calibrate_min=20, min_confidence=0.0)
    cal = LabelJudge(ScriptedBackend(biased), cfg).judge(items)
    assert all(v.calibrated and v.agrees and v.decision == "agree" for v in cal)
    assert all(sum(v.probs.values()) == pytest.approx(1.0) for v in cal)
    few = LabelJudge(ScriptedBackend(biased), cfg).judge(items[:10])
    assert [v.choice for v in few] == [v.choice for v in raw[:10]] and not any(v.calibrated for v in few)


def test_odd_log_probabilities_are_ignored():
    def answer(req, i, n_call):
        odd = {"A": None, "B": float("-inf"), "Z": -0.1, "C": "x"}
        return Result(req.id, i, text="B", choice_logprobs=odd)

    [v] = LabelJudge(ScriptedBackend(answer), JudgeConfig()).judge(ITEMS[:1])
    assert v.probs is None and v.letter == "B" and v.decision in ("agree", "unsure")


def test_as_filter_judge_answers_from_verdicts():
    def answer(req, i, n_call):
        options = json.loads(dict(req.meta)["options"])
        pick = {"my card never came": "card_arrival", "rate for euros?": "top_up_failed"}
        text = next((t for t in pick if f'"{t}"' in req.messages[-1][1]), None)
        if text is None:
            return Result(req.id, i, text="?")
        letter = req.choices[options.index(pick[text])]
        return Result(req.id, i, text=letter, choice_logprobs={letter: -0.1})

    verdicts = LabelJudge(ScriptedBackend(answer), JudgeConfig()).judge(ITEMS)
    judge = as_filter_judge(verdicts)
    labels = sorted(EXAMPLES)
    assert parse_judge_answer(judge("my card never came", "card_arrival", labels), labels) == "card_arrival"
    assert parse_judge_answer(judge("rate for euros?", "exchange_rate", labels), labels) == "top_up_failed"
    assert judge("how long until it comes", "card_arrival", labels) == ""  # unsure: unclear
    assert judge("never judged", "card_arrival", labels) == ""


# -- the call cache ----------------------------------------------------------------------------------------


def test_second_call_is_answered_from_the_cache(tmp_path):
    be = CountingBackend(choosing(lambda label, options: label))
    meter = UsageMeter()
    judge = make_judge(JudgeConfig(), generator=be, cache=tmp_path / "llm.sqlite", meter=meter)
    assert isinstance(judge.backend, CachedBackend) and judge.backend.stage == "judge"
    first = judge.judge(ITEMS)
    assert be.calls == 3
    # a new judge on the same cache file (another round, another process) asks nothing again
    again = make_judge(
        JudgeConfig(),
        generator=CachedBackend(be, LLMCache(tmp_path / "x.sqlite")),
        cache=LLMCache(tmp_path / "llm.sqlite"),
        meter=meter,
    )
    second = again.judge(ITEMS)
    assert be.calls == 3 and all(v.cached for v in second)
    assert [(v.choice, v.probs, v.decision) for v in second] == [
        (v.choice, v.probs, v.decision) for v in first
    ]
    assert meter.summary()["totals"]["cache_hits"] == 3
    # another template version or option count is another question
    judge2 = make_judge(JudgeConfig(style="completion"), generator=be, cache=tmp_path / "llm.sqlite")
    judge2.judge(ITEMS)
    assert be.calls == 6


def test_make_judge_needs_a_backend(tmp_path):
    with pytest.raises(ValueError, match="no generator"):
        make_judge(JudgeConfig(), cache=tmp_path / "c.sqlite")


def test_a_judge_with_its_own_backend_closes_it(tmp_path):
    shared = ScriptedBackend()
    judge = make_judge(JudgeConfig(), generator=shared, cache=tmp_path / "c.sqlite")
    assert judge.backend.backend is shared and not judge.owns_backend
    cfg = JudgeConfig(backend={"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"})
    own = make_judge(cfg, generator=shared, cache=tmp_path / "c.sqlite")
    assert own.owns_backend and own.backend.backend is not shared and own.model_id.startswith("openai:")
    own.close()


def test_choices_leave_other_cache_keys_as_they_were():
    """Keys of requests without choices are byte-for-byte those from before the field existed."""
    chat = GenerationRequest(
        id="x",
        mode="chat",
        messages=(("system", "s"), ("user", "u")),
        sampling=SamplingParams(temperature=0.0, max_tokens=1),
        template="t",
        template_version="v1",
    )
    plain = GenerationRequest(id="x", mode="completion", prompt="p", template="t", template_version="v1")
    assert chat.cache_key("local:m", 0) == "8c1f0dfa441bb75d6717f772af67292c45c882f4aeabb6ad27bed91ef799d4f6"
    assert plain.cache_key("m", 3) == "d531ec981e42af1c664c03a6b9407173b07d1687561f3efc6fbfd2339ce02156"
    with_choices = GenerationRequest(**{**chat.__dict__, "choices": ("A", "B")})
    assert with_choices.cache_key("local:m", 0) != chat.cache_key("local:m", 0)
    assert with_choices.canonical("local:m", 0)["choices"] == ["A", "B"]


# -- the OpenAI-compatible path on loopback ----------------------------------------------------------------


def test_openai_path_asks_for_logprobs_and_guided_choice(tmp_path):
    """A real HTTP server that answers text without log-probabilities: the judge sends one-token requests
    with log-probabilities and the vLLM guided choice, and its unusable answers end as unsure verdicts."""
    from activesynth.agent.llm.openai import OpenAIBackend

    def backend(url):
        extra = {"guided_choice": True, "top_k": 1}
        return OpenAIBackend(
            OpenAIConfig(model="fake-model", base_url=url, timeout_s=5, max_retries=0, extra_body=extra)
        )

    with FaultServer() as srv:
        be = backend(srv.url)
        verdicts = make_judge(JudgeConfig(), generator=be, cache=tmp_path / "c.sqlite").judge(ITEMS)
        bodies = [r["body"] for r in srv.requests]
    assert len(bodies) == 3 and all(v.decision == "unsure" and v.error is None for v in verdicts)
    assert all(v.answer.startswith(" synthetic text") for v in verdicts)
    for body in bodies:
        assert body["max_tokens"] == 1 and body["temperature"] == 0.0
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["guided_choice"] == ["A", "B", "C"] and body["top_k"] == 1
    # the same backend config generating ordinary texts sends no placeholder
    with FaultServer() as srv:
        be = backend(srv.url)
        be.generate([GenerationRequest(id="g", mode="completion", prompt="Bank messages:\n1.")])
        body = srv.requests[0]["body"]
    assert "guided_choice" not in body and "logprobs" not in body and body["top_k"] == 1


def test_openai_logprobs_are_read_from_the_sdk_types():
    """Chat and completion responses as the SDK parses them: the first token's alternatives become the
    choices' log-probabilities (a spelling with a space joins its letter)."""
    from openai.types import Completion
    from openai.types.chat import ChatCompletion

    from activesynth.agent.llm.openai import _choice_logprobs

    top = [
        {"token": "B", "logprob": -0.2, "bytes": None},
        {"token": " B", "logprob": -2.0, "bytes": None},
        {"token": "A", "logprob": -1.9, "bytes": None},
        {"token": "Hello", "logprob": -3.0, "bytes": None},
    ]
    chat = ChatCompletion.model_validate(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": "B"},
                    "logprobs": {
                        "content": [{"token": "B", "logprob": -0.2, "bytes": None, "top_logprobs": top}]
                    },
                }
            ],
        }
    )
    lp = _choice_logprobs(chat, 0, ("A", "B", "C"))
    assert set(lp) == {"A", "B"} and lp["A"] == pytest.approx(-1.9)
    assert lp["B"] == pytest.approx(math.log(math.exp(-0.2) + math.exp(-2.0)))
    comp = Completion.model_validate(
        {
            "id": "y",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": " C",
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": [" C"],
                        "token_logprobs": [-0.1],
                        "top_logprobs": [{" C": -0.1, "A": -4}],
                    },
                }
            ],
        }
    )
    assert _choice_logprobs(comp, 0, ("A", "B", "C")) == {"C": -0.1, "A": -4.0}
    assert _choice_logprobs(comp, 0, ()) is None


@pytest.mark.slow
def test_real_llama_cpp_server_with_a_grammar(llama_server, tmp_path):  # noqa: F811 - the imported fixture
    """llama-cpp-python's own server (SmolLM2) constrains the answer with the grammar the backend fills in and
    returns log-probabilities: every verdict has a choice, probabilities, and the letter as its answer."""
    from activesynth.agent.llm.openai import OpenAIBackend

    be = OpenAIBackend(
        OpenAIConfig(model="smollm2", base_url=llama_server, timeout_s=120, extra_body={"grammar": True})
    )
    judge = make_judge(JudgeConfig(), generator=be, cache=tmp_path / "c.sqlite", task=TASK)
    assert judge.template.name == "judge_choice"
    verdicts = judge.judge(ITEMS)
    for v in verdicts:
        assert v.error is None and v.choice in v.options and v.answer.strip() in ("A", "B", "C")
        assert v.probs is not None and sum(v.probs.values()) == pytest.approx(1.0)
        assert max(v.probs, key=v.probs.get) == v.choice  # greedy: the likeliest allowed letter
        assert v.decision in ("agree", "disagree", "unsure")


# -- the local model through llama.cpp ---------------------------------------------------------------------


def local_or_skip(model: str, parallel: int = 8):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from activesynth.agent.llm.local import LocalBackend

    config = LocalConfig(model=model, runtime="llama_cpp", threads=2, n_ctx=1024, parallel=parallel)
    return LocalBackend(config)


def packaged_or_skip(name: str) -> str:
    """The path of a packaged model when another step has already assembled it (never fetched here)."""
    from activesynth.agent.llm.local import default_cache_dir

    try:
        from activesynth.agent.llm.models import PACKAGED_MODELS, cached_path
    except ImportError:
        pytest.skip("no packaged models in this build")
    path = cached_path(PACKAGED_MODELS[name], default_cache_dir())
    if not path.exists():
        pytest.skip(f"{name} is not assembled (python -m activesynth.agent.llm.models {name})")
    return str(path)


@pytest.fixture(scope="module")
def gemma():
    be = local_or_skip("gemma3-270m")
    yield be
    be.close()


@pytest.mark.slow
def test_real_local_model_answers_one_letter_with_probabilities(gemma, tmp_path):
    judge = make_judge(
        JudgeConfig(examples_per_option=1),
        generator=gemma,
        cache=tmp_path / "c.sqlite",
        examples=EXAMPLES,
        task=TASK,
    )
    assert judge.template.name == "judge_choice_completion"  # Gemma-3-270M base has no chat template
    verdicts = judge.judge(ITEMS)
    for v in verdicts:
        assert v.error is None and v.answer.strip() in ("A", "B", "C") and v.choice in v.options
        assert sum(v.probs.values()) == pytest.approx(1.0) and set(v.probs) == set(v.options)
        assert 0 < v.mass <= 1
        assert max(v.probs, key=v.probs.get) == v.choice  # temperature 0: the likeliest letter
    again = judge.judge(ITEMS)
    assert all(v.cached for v in again) and [v.probs for v in again] == [v.probs for v in verdicts]


@pytest.mark.slow
def test_real_local_choices_match_llama_cpp_logprobs():
    """The scorer's log-probabilities equal those llama-cpp-python computes itself with ``logits_all``.

    Both evaluate the whole prompt in one batch (a fresh model, one stream): a prompt evaluated after a
    reused prefix, or in the batch decoder's context, gets log-probabilities up to ~0.1 apart with this
    quantized model (other batch shapes, other rounding); the next test covers the batch decoder.
    """
    from llama_cpp import Llama

    gemma = local_or_skip("gemma3-270m", parallel=1)

    prompt = 'Labels:\nA) card arrival\nB) exchange rate\nMessage: "where is my card"\nAnswer:'
    req = GenerationRequest(
        id="q",
        mode="completion",
        prompt=prompt,
        sampling=SamplingParams(temperature=0, max_tokens=1),
        choices=("A", "B"),
    )
    [res] = gemma.generate([req])
    assert res.ok and res.text.strip() in ("A", "B") and set(res.choice_logprobs) == {"A", "B"}
    ref = Llama(
        model_path=str(gemma.source.gguf_path), n_ctx=128, n_threads=2, logits_all=True, verbose=False
    )
    try:
        out = ref.create_completion(prompt, max_tokens=1, temperature=0, logprobs=5000)
        top = out["choices"][0]["logprobs"]["top_logprobs"][0]
    finally:
        ref.close()
        gemma.close()
    for letter in ("A", "B"):
        expected = math.log(sum(math.exp(top[t]) for t in (letter, " " + letter) if t in top))
        assert res.choice_logprobs[letter] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_real_local_grammar_for_choices_longer_than_a_token(gemma):
    req = GenerationRequest(
        id="g",
        mode="completion",
        prompt='Message: "where is my card"\nIntent (card arrival or exchange rate):',
        sampling=SamplingParams(temperature=0, max_tokens=8),
        choices=("card arrival", "exchange rate"),
    )
    [res] = gemma.generate([req])
    assert res.ok and res.text.strip() in ("card arrival", "exchange rate") and res.choice_logprobs is None


@pytest.mark.slow
def test_real_packaged_instruction_model_as_judge(tmp_path):
    be = local_or_skip(packaged_or_skip("qwen2.5-coder-0.5b"))
    try:
        judge = make_judge(JudgeConfig(), generator=be, cache=tmp_path / "c.sqlite", task=TASK)
        assert judge.template.name == "judge_choice"  # an instruction model with its chat template
        verdicts = judge.judge(ITEMS)
        assert all(v.error is None and v.choice in v.options and v.probs for v in verdicts)
    finally:
        be.close()


@pytest.mark.slow
def test_real_local_batched_choices_agree_with_one_stream():
    """The batch decoder answers choice questions as one-stream decoding does: same letter, log-probabilities
    within 0.3, for several questions decoded together: prompts evaluated side by side in one batch use other
    matrix kernels than one prompt alone, which moved a log-probability near -2.4 by up to 0.24 here (alone in
    the batch decoder, the numbers equal one-stream decoding's to the printed digit)."""
    one = local_or_skip("gemma3-270m", parallel=1)
    many = local_or_skip("gemma3-270m", parallel=4)
    msgs = [
        "where is my card",
        "what is the exchange rate today",
        "my card has not arrived yet",
        "euro rate?",
    ]
    reqs = [
        GenerationRequest(
            id=f"q{i}",
            mode="completion",
            prompt=f'Labels:\nA) card arrival\nB) exchange rate\nMessage: "{m}"\nAnswer:',
            sampling=SamplingParams(temperature=0, max_tokens=1),
            choices=("A", "B"),
        )
        for i, m in enumerate(msgs)
    ]
    try:
        a = {r.request_id: r for r in one.generate(reqs)}
        b = {r.request_id: r for r in many.generate(reqs)}
        assert many.last_batch_stats is not None and many.last_batch_stats.jobs == 4
    finally:
        one.close()
        many.close()
    for rid, ra in a.items():
        rb = b[rid]
        assert rb.ok and rb.text == ra.text.strip() and rb.completion_tokens == 1
        for letter in ("A", "B"):
            assert rb.choice_logprobs[letter] == pytest.approx(ra.choice_logprobs[letter], abs=0.3)
