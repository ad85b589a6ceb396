"""Scrub personal data from texts before they reach a prompt, a report or a generator.

Detected kinds become typed placeholders: ``[EMAIL]``, ``[URL]``, ``[IBAN]``, ``[CARD]`` (numbers that pass
the Luhn check), ``[PHONE]``. Numbers that merely look like cards or IBANs but fail their checksum are kept.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["PIIScrubber", "ScrubResult", "luhn_ok", "iban_ok", "scrub"]

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]", re.IGNORECASE)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,6}){1,4}(?!\w)"
)


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """True when an IBAN passes its ISO 13616 mod-97 check."""
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


@dataclass
class ScrubResult:
    """A scrubbed text and how many items of each kind were replaced."""

    text: str
    counts: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.counts)


class PIIScrubber:
    """Replace emails, URLs, IBANs, card numbers (Luhn) and phone numbers with typed placeholders.

    ``scrub(text)`` returns a :class:`ScrubResult`; ``totals`` counts replacements over all calls.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.totals: Counter = Counter()
        self.texts_changed = 0

    def scrub(self, text: str) -> ScrubResult:
        if not self.enabled:
            return ScrubResult(text)
        counts: Counter = Counter()

        def sub(pattern: re.Pattern, kind: str, check=None):
            nonlocal text

            def repl(m: re.Match) -> str:
                if check is not None and not check(m.group(0)):
                    return m.group(0)
                counts[kind] += 1
                return f"[{kind}]"

            text = pattern.sub(repl, text)

        sub(_EMAIL, "EMAIL")
        sub(_URL, "URL")
        sub(_IBAN, "IBAN", iban_ok)
        sub(_CARD, "CARD", lambda s: luhn_ok(re.sub(r"\D", "", s)))
        sub(_PHONE, "PHONE", _looks_like_phone)
        if counts:
            self.totals.update(counts)
            self.texts_changed += 1
        return ScrubResult(text, counts)

    def scrub_many(self, texts: list[str]) -> list[str]:
        return [self.scrub(t).text for t in texts]


def _looks_like_phone(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    if not 7 <= len(digits) <= 15:
        return False
    # Dates, times, amounts and versions are not phones: require a phone-ish shape.
    if re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", s.strip()):
        return False
    return s.strip().startswith(("+", "(")) or len(digits) >= 9 or bool(re.search(r"\d{3}[\s.-]\d{4}", s))


def scrub(text: str) -> str:
    """Scrub one text with default settings and return the new text."""
    return PIIScrubber().scrub(text).text
