"""Output parsing survives junk; unusable outputs are kept with a reason."""

from __future__ import annotations

import pytest

from activesynth.agent.llm.parse import parse_output, strip_marker


def texts(items, status="parsed"):
    return [p.text for p in items if p.status == status]


def test_list_continuation_takes_the_open_item_and_following_items():
    raw = " Where is my card?\n10. When will it arrive\n11) 'Is it lost?'\n\nQuestion: unrelated"
    assert texts(parse_output(raw, "list")) == ["Where is my card?", "When will it arrive", "Is it lost?"]


def test_list_stops_when_the_model_leaves_the_list():
    raw = " My card is late.\nThe assistant answered that cards take a week.\n12. never reached"
    assert texts(parse_output(raw, "list")) == ["My card is late."]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("1. hello there", "hello there"),
        ("(2) hello there", "hello there"),
        ("- hello there", "hello there"),
        ("• hello there", "hello there"),
        ("* hello there", "hello there"),
        ('3. "hello there"', "hello there"),
        ("“hello there”", "hello there"),
        ("Text 4: hello there", "hello there"),
        ("Example: hello there", "hello there"),
    ],
)
def test_markers_and_quotes_are_stripped(line, expected):
    assert strip_marker(line) == expected


def test_chat_reply_with_preamble_and_several_texts():
    raw = 'Sure! Here are 3 new messages:\n\n1. "My card is late"\n2) Card still not here\n- why so slow?\n'
    out = parse_output(raw, "chat")
    assert texts(out) == ["My card is late", "Card still not here", "why so slow?"]
    assert [(p.status, p.reason) for p in out if p.status != "parsed"] == [("unusable", "meta_reply")]


@pytest.mark.parametrize(
    "raw",
    [
        "I'm sorry, I can't help with that.",
        "Here's a message about a card:",
        "As an AI, I cannot",
        "Certainly!",
    ],
)
def test_meta_replies_are_unusable(raw):
    out = parse_output(raw, "chat")
    assert texts(out) == []
    assert out[0].reason == "meta_reply" and out[0].text


def test_truncated_last_item_is_unusable_but_kept():
    out = parse_output(" first text\n5. second te", "list", finish_reason="length")
    assert texts(out) == ["first text"]
    assert out[-1].status == "unusable" and out[-1].reason == "truncated" and out[-1].text == "second te"


def test_length_stop_after_a_newline_is_not_truncation():
    assert texts(parse_output(" first text\n", "list", finish_reason="length")) == ["first text"]


def test_empty_and_symbol_only_outputs():
    assert parse_output("", "list")[0].reason == "empty"
    assert parse_output("   \n ", "chat")[0].reason == "empty"
    assert parse_output(" 12345 !!", "list")[0].reason == "too_short"


def test_duplicates_inside_one_output_are_marked():
    out = parse_output("1. same text\n2. Same text\n3. other text", "chat")
    assert texts(out) == ["same text", "other text"]
    assert [p.reason for p in out if p.status != "parsed"] == ["duplicate_in_output"]


def test_rewrite_takes_one_text_and_stops_at_the_next_header():
    out = parse_output(" I still have not got the card I ordered in May.\nOriginal: another", "rewrite")
    assert texts(out) == ["I still have not got the card I ordered in May."]


def test_nothing_found_keeps_the_raw_text():
    out = parse_output("\n\nOriginal: x\n", "rewrite")
    assert out[0].status == "unusable" and out[0].reason == "no_text_found"
