"""The likelihood verifier: settings and decisions (fast), and the real Gemma-3-270M through llama.cpp (slow):
KV reuse equals evaluation from scratch, own-label contexts beat rival ones on real BANKING77 texts, and
each label's prefix is evaluated once."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from pydantic import ValidationError

from activesynth.agent.config.llm import LocalConfig, OpenAIConfig
from activesynth.agent.config.verify import VerifierConfig
from activesynth.agent.llm.protocol import BackendError
from activesynth.agent.verify import LikelihoodVerifier, Verification, VerifyItem, decide, model_spec
from activesynth.prompts import get_template, load_template
from tests.conftest import SMALL_LABELS, banking_slice

TASK = "Messages that customers send to their bank's support chat"

# -- settings and decisions (no model) -------------------------------------------------------------------


def test_config_is_strict_and_documented():
    with pytest.raises(ValidationError):
        VerifierConfig(treshold=0.1)
    with pytest.raises(ValidationError):
        VerifierConfig(verdict="ignore")
    with pytest.raises(ValidationError):
        VerifierConfig(rivals=0)
    for name, field in VerifierConfig.model_fields.items():
        assert field.description, name


def test_decide_keeps_at_threshold_and_applies_the_verdict_below():
    cfg = VerifierConfig(threshold=0.1)
    assert decide(0.1, "b", cfg) == ("keep", None)
    assert decide(0.05, "b", cfg) == ("drop", None)
    assert decide(None, None, cfg) == ("unchecked", None)
    assert decide(-1.0, "b", cfg.model_copy(update={"verdict": "review"})) == ("review", None)
    relabel = VerifierConfig(threshold=0.1, verdict="relabel", relabel_margin=0.2)
    assert decide(-0.3, "b", relabel) == ("relabel", "b")
    # below threshold but the rival is not likelier by the margin: dropped, not relabelled
    assert decide(-0.1, "b", relabel) == ("drop", None)
    assert decide(0.05, "b", relabel) == ("drop", None)


def test_model_defaults_to_the_local_generator():
    assert model_spec(VerifierConfig(model="x.gguf"), LocalConfig(model="gemma3-270m")) == "x.gguf"
    assert model_spec(VerifierConfig(), LocalConfig(model="smollm2-135m")) == "smollm2-135m"
    with pytest.raises(BackendError, match="verify.model"):
        model_spec(VerifierConfig(), OpenAIConfig(model="gpt"))
    with pytest.raises(BackendError, match="verify.model"):
        model_spec(VerifierConfig(), None)


def test_template_must_be_a_completion_list(tmp_path):
    with pytest.raises(ValueError, match="chat template"):
        chat = get_template("self_instruct_chat")
        LikelihoodVerifier(VerifierConfig(model="m"), examples={}, template=chat)
    path = tmp_path / "closed.jinja2"
    path.write_text(
        "{#- ---\nmode: completion\nfamily: list\ndescription: closed\n--- -#}\n"
        "{{ task }}: {{ label_text }}\n{% for ex in examples %}- {{ ex }}\n{% endfor %}Write another one:"
    )
    with pytest.raises(ValueError, match="must end where the next example"):
        LikelihoodVerifier(VerifierConfig(model="m"), examples={}, template=load_template(path))


def test_context_examples_are_a_seeded_sample():
    pool = {"a": [f"text {i}" for i in range(20)], "b": ["only one"]}
    v = LikelihoodVerifier(VerifierConfig(model="m", n_examples=5), examples=pool)
    first = v.context_examples("a")
    assert len(first) == 5 and set(first) <= set(pool["a"])
    same = LikelihoodVerifier(VerifierConfig(model="m", n_examples=5), examples=pool)
    assert same.context_examples("a") == first
    other = LikelihoodVerifier(VerifierConfig(model="m", n_examples=5, seed=1), examples=pool)
    assert other.context_examples("a") != first
    assert v.context_examples("b") == ["only one"]
    assert v.context_examples("unknown") == []


# -- the real model --------------------------------------------------------------------------------------

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)


def _examples(per_class: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in banking_slice("train", SMALL_LABELS, per_class):
        out.setdefault(row["label"], []).append(row["text"])
    return out


def _verifier(**settings) -> LikelihoodVerifier:
    cfg = VerifierConfig(model="gemma3-270m", threads=1, **settings)
    return LikelihoodVerifier(cfg, examples=_examples(10), task=TASK)


@pytest.mark.slow
@needs_llama
def test_restored_prefix_state_equals_evaluation_from_scratch():
    """(a) KV reuse is right: the cached path, including prefixes brought back from saved states, gives the
    log-probability that evaluating the context and the text from an empty cache gives."""
    rows = banking_slice("test", SMALL_LABELS, 1)[:4]
    with _verifier(n_examples=8) as v:
        pairs = [(r["text"], lab) for r in rows for lab in (r["label"], "card_arrival")]
        cached = [v.logprob(text, lab) for text, lab in pairs]  # moves between contexts
        assert v.stats.prefix_evals == len({lab for _, lab in pairs})
        again = [v.logprob(text, lab) for text, lab in reversed(pairs)][::-1]  # restored from saved states
        assert v.stats.restores >= 3
        assert v.stats.prefix_evals == len({lab for _, lab in pairs})
        split = [v.logprob_uncached(text, lab, split=True) for text, lab in pairs]
        one_pass = [v.logprob_uncached(text, lab) for text, lab in pairs]
        tokens = [len(v.text_tokens(text)) for text, _ in pairs]
    assert cached == again == split  # the same batches: bit-identical
    for c, o, n in zip(cached, one_pass, tokens, strict=True):
        assert c < 0 and n > 2
        # one pass in other batch shapes: equal here; 1e-3 leaves room for other CPUs' float order
        assert c == pytest.approx(o, abs=1e-3), (c, o)
    # the scores tell contexts apart far beyond that tolerance
    assert max(abs(a - b) for a, b in zip(cached[::2], cached[1::2], strict=True)) > 1.0


@pytest.mark.slow
@needs_llama
def test_a_prefix_longer_than_the_attention_window_is_reused_exactly():
    """Gemma-3 attends over a 512-token sliding window in most layers; a longer context must be reused
    exactly too (full-size sliding-window cache)."""
    rows = banking_slice("test", ["card_arrival"], 2)
    cfg = VerifierConfig(model="gemma3-270m", threads=1, n_examples=45)
    with LikelihoodVerifier(cfg, examples=_examples(45), task=TASK) as v:
        cached = [v.logprob(r["text"], "card_arrival") for r in rows]
        assert len(v._context("card_arrival").tokens) > 600
        split = [v.logprob_uncached(r["text"], "card_arrival", split=True) for r in rows]
    assert cached == split


@pytest.mark.slow
@needs_llama
def test_saved_states_are_bounded_and_an_evicted_prefix_is_evaluated_again():
    text = "My card still has not arrived, how long does delivery take?"
    with _verifier(n_examples=3, max_cached_prefixes=1) as v:
        first = v.logprob(text, "card_arrival")
        v.logprob(text, "exchange_rate")  # evicts card_arrival's state
        assert len(v._states) == 1 and v.stats.state_bytes > 0
        assert v.logprob(text, "card_arrival") == first
        assert v.stats.prefix_evals == 3 and v.stats.restores == 0
        v.logprob(text, "card_arrival")  # still resident: no evaluation, no restore
        assert v.stats.prefix_evals == 3 and v.stats.restores == 0


def rivals_from_proba(proba, classes, labels, k):
    """Per row, the classifier's ``k`` likeliest classes other than the row's label (best first)."""
    return [
        tuple(classes[j] for j in np.argsort(-row, kind="stable") if classes[j] != label)[:k]
        for row, label in zip(proba, labels, strict=True)
    ]


@pytest.fixture(scope="module")
def banking_items(embedder):
    """~40 held-out BANKING77 texts of 8 intents, each twice: with its gold label and presented as the
    10-shot classifier's likeliest other class; rivals are the classifier's top others."""
    from activesynth.agent.classifier import HeadEnsemble

    ex = _examples(10)
    train_texts = [t for lab in SMALL_LABELS for t in ex[lab]]
    train_labels = [lab for lab in SMALL_LABELS for _ in ex[lab]]
    clf = HeadEnsemble(embedder, n_heads=3, seed=0).fit(train_texts, train_labels)
    rows = banking_slice("test", SMALL_LABELS, 5)
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    proba = np.asarray(clf.predict_proba(texts))
    classes = list(clf.classes_)
    rival = [r[0] for r in rivals_from_proba(proba, classes, gold, 1)]
    rivals_right = rivals_from_proba(proba, classes, gold, 2)
    rivals_wrong = rivals_from_proba(proba, classes, rival, 2)
    right = [VerifyItem(texts[i], gold[i], rivals_right[i], f"right{i}") for i in range(len(texts))]
    wrong = [VerifyItem(texts[i], rival[i], rivals_wrong[i], f"wrong{i}") for i in range(len(texts))]
    return right, wrong


@pytest.mark.slow
@needs_llama
def test_own_label_context_beats_the_rival_on_real_texts_and_prefixes_are_evaluated_once(banking_items):
    """(b) on real texts the own label's context is likelier than the classifier-chosen rival's for clearly
    more than half, and wrong labels get a negative ratio more often than right ones; (c) each label's
    prefix is evaluated once, a second call evaluates none and gives the same numbers."""
    right, wrong = banking_items
    items = right + wrong
    with _verifier(n_examples=8, rivals=2) as v:
        results = v.verify(items)
        used = {lab for it in items for lab in (it.label, *it.rivals[:2])}
        assert v.stats.prefix_evals == len(used) <= len(SMALL_LABELS)
        pairs = {(" ".join(it.text.split()), lab) for it in items for lab in (it.label, *it.rivals[:2])}
        assert v.stats.candidate_evals == len(pairs) < 3 * len(items)  # shared (text, context) pairs once
        again = v.verify(items[:10] + items[-10:])
        assert v.stats.prefix_evals == len(used)
        assert v.stats.restores >= 1
    assert all(isinstance(r, Verification) and r.ratio is not None for r in results)
    assert [r.ratio for r in again] == [r.ratio for r in results[:10] + results[-10:]]

    by_id = {r.id: r for r in results}
    # own label against the classifier-chosen rival (first rival), per text
    beats = [by_id[it.id].logprob > by_id[it.id].rival_logprobs[it.rivals[0]] for it in right]
    assert np.mean(beats) >= 0.75, np.mean(beats)
    neg_right = np.mean([by_id[it.id].ratio < 0 for it in right])
    neg_wrong = np.mean([by_id[it.id].ratio < 0 for it in wrong])
    assert neg_wrong > neg_right + 0.4, (neg_wrong, neg_right)
    for r in results:
        assert r.n_tokens > 1 and r.logprob < 0
        assert r.ratio == pytest.approx((r.logprob - r.rival_logprobs[r.best_rival]) / r.n_tokens)
        assert (r.decision, r.relabel) == decide(r.ratio, r.best_rival, v.config)
        assert r.per_token == pytest.approx(r.logprob / r.n_tokens)


@pytest.mark.slow
@needs_llama
def test_items_that_cannot_be_checked_are_kept_with_a_reason():
    with _verifier(n_examples=2, rivals=1) as v:
        out = v.verify(
            [
                VerifyItem("", "card_arrival", ("exchange_rate",), "empty"),
                VerifyItem("Where is my card?", "unknown_label", ("card_arrival",), "nolabel"),
                VerifyItem("Where is my card?", "card_arrival", ("unknown_label",), "norival"),
                VerifyItem("Where is my card?", "card_arrival", ("card_delivery_estimate",), "ok"),
            ]
        )
    assert [r.decision for r in out[:3]] == ["unchecked"] * 3
    assert out[0].error == "empty text"
    assert "no examples of unknown_label" in out[1].reason
    assert "no rival" in out[2].reason
    assert out[3].decision in {"keep", "drop"} and out[3].ratio is not None
