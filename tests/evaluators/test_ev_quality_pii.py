"""Rule checks and the PII filter."""

from __future__ import annotations

import pytest

from activesynth.evaluators.base import Candidate, FilterContext, Verdict
from activesynth.evaluators.pii_filter import PIIFilter
from activesynth.evaluators.quality import QualityRules, normalize, script_share


def judge_one(text: str, ctx: FilterContext | None = None, **cand) -> str:
    d = QualityRules().judge([Candidate("c", text, "x", **cand)], ctx or FilterContext())[0]
    return d.code if d.verdict == Verdict.DROP else "ok"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("hi", "too_short"),
        ("card " * 70, "too_long"),
        ("Here's a message a customer might send:", "meta_reply"),
        ("Sure, here are five examples of that intent", "meta_reply"),
        ("As an AI language model I cannot open accounts", "meta_reply"),
        ("I'm sorry, but I can't help with that request.", "refusal"),
        ("I cannot help with generating that.", "refusal"),
        ("1. How do I top up my card?", "list_markup"),
        ("- Where is my card?", "list_markup"),
        ("Where is **my** card?", "list_markup"),
        ("Query: where is my card?", "prompt_words"),
        ("#Rewritten Prompt#: where is my card", "prompt_words"),
        ("Where is my card?<end_of_turn>", "template_artifact"),
        ("what is it that you do?", "stopwords_only"),
        ("?!?! ... ,,,", "stopwords_only"),
        ("Как перевести деньги другу?", "wrong_script"),
        ("我想把钱转给朋友", "wrong_script"),
        ("Wie kann ich Geld auf mein Konto überweisen?", "wrong_language"),
        ("¿Cómo puedo enviar dinero a mi amigo desde la app?", "wrong_language"),
        ("card card card card card card please", "repetition"),
    ],
)
def test_rules_drop(text, code):
    assert judge_one(text) == code


@pytest.mark.parametrize(
    "text",
    [
        "I can't log in to my app",
        "I am sorry to bother you, but my card is lost",
        "Sure that the transfer went out? It has not arrived.",
        "Why did I get charged [CARD] fees for a transfer of €50?",
        "Card not working",
    ],
)
def test_rules_keep_plausible_customer_messages(text):
    assert judge_one(text) == "ok"


def test_copies():
    ctx = FilterContext(
        real_texts=["Where is my new card?"],
        few_shot_texts=["How long does a transfer take?"],
        prompts={"p1": "Write messages for the intent card_arrival.\nMy card has not arrived yet"},
    )
    assert judge_one("where is my NEW card", ctx) == "copy_of_example"
    assert judge_one("How long does a transfer take", ctx) == "copy_of_example"
    assert judge_one("My card has not arrived yet!", ctx, prompt_id="p1") == "copy_of_prompt"
    assert judge_one("Where has my card gone, please?", ctx, source_text="where has my card gone please") == (
        "copy_of_source"
    )
    assert judge_one("My replacement card still has not come", ctx, prompt_id="p1") == "ok"


def test_reason_lists_every_failed_rule():
    d = QualityRules().judge(
        [Candidate("c", "1. Here's a list: card card card card card card", "x")], FilterContext()
    )
    assert d[0].verdict == Verdict.DROP
    assert "list_markup" in d[0].reason or "list" in d[0].reason
    assert d[0].score >= 2


def test_real_texts_pass(banking_dev):
    # The rules must not reject real customer messages: at most 2% of 1,000 real dev texts.
    texts = [t for t, _ in banking_dev]
    out = QualityRules(check_copies=False).judge(
        [Candidate(str(i), t, "x") for i, t in enumerate(texts)], FilterContext()
    )
    dropped = [(t, d.reason) for t, d in zip(texts, out, strict=True) if d.verdict == Verdict.DROP]
    assert len(dropped) <= 0.02 * len(texts), dropped[:10]


def test_helpers():
    assert normalize("  Where's  MY card?! ") == "where's my card"
    assert script_share("abc") == 1.0
    assert script_share("123 ?") is None
    assert script_share("ab вг") == 0.5


def test_pii_drop_and_scrub():
    texts = [
        "Send it to john.doe@example.com please",
        "My card number is 4111 1111 1111 1111",
        "Where is my card?",
    ]
    cands = [Candidate(str(i), t, "x") for i, t in enumerate(texts)]
    dropped = PIIFilter(mode="drop").judge(cands, FilterContext())
    assert [d.verdict for d in dropped] == [Verdict.DROP, Verdict.DROP, Verdict.KEEP]
    assert dropped[0].reason == "personal_data: 1 EMAIL"
    assert "john" not in dropped[0].reason and "4111" not in dropped[1].reason
    scrubbed = PIIFilter(mode="scrub").judge(cands, FilterContext())
    assert [d.verdict for d in scrubbed] == [Verdict.KEEP] * 3
    assert scrubbed[0].rewrite == "Send it to [EMAIL] please"
    assert scrubbed[1].rewrite == "My card number is [CARD]"
    assert scrubbed[2].rewrite is None
    with pytest.raises(ValueError):
        PIIFilter(mode="mask")
