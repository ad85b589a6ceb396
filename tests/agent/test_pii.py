import pytest

from activesynth.agent.pii import PIIScrubber, iban_ok, luhn_ok, scrub


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to john.doe@example.com please", "write to [EMAIL] please", "EMAIL"),
        ("see https://bank.example.com/help?x=1.", "see [URL].", "URL"),
        ("my card 4111 1111 1111 1111 was charged", "my card [CARD] was charged", "CARD"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please", "IBAN"),
        ("call me on +44 20 7946 0958", "call me on [PHONE]", "PHONE"),
        ("ring 555-123-4567 today", "ring [PHONE] today", "PHONE"),
        ("mobile +44 7700 900123 please", "mobile [PHONE] please", "PHONE"),
    ],
)
def test_scrubs_each_kind(text, expected, kind):
    s = PIIScrubber()
    r = s.scrub(text)
    assert r.text == expected
    assert r.counts[kind] == 1
    assert s.totals[kind] == 1 and s.texts_changed == 1


@pytest.mark.parametrize(
    "text",
    [
        "card 1234 5678 9012 3456 fails luhn",  # not a valid card number
        "I paid 25.50 on 12/03/2020 at 10:30",
        "my top-up of 1000 GBP failed",
        "on 2023-01-15 I paid 20.00 and 1,250.75 later",
        "GB00WEST12345698765432 is not a valid IBAN",
    ],
)
def test_keeps_lookalikes(text):
    assert scrub(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")


def test_disabled_scrubber_is_identity():
    s = PIIScrubber(enabled=False)
    assert s.scrub("mail a@b.co").text == "mail a@b.co"
    assert not s.totals
