"""Turn raw model output into candidate texts; junk is kept with a reason, never dropped silently.

Handles list markers and numbering (``3.``, ``3)``, ``(3)``, ``-``, ``*``, ``•``, ``Text 2:``), surrounding
quotes, several texts in one completion, meta replies ("Here's a…", "Sure,…", "I'm sorry…"), echoed headers
and truncation (``finish_reason == "length"`` cuts the last text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedText", "parse_output", "strip_marker"]

_MARKER = re.compile(
    r"""^\s*(?:
        \(?\d{1,3}[.):\]]\s*            # 1.  1)  (1)  1:  1]
      | [-*•·–—]\s+                    # bullets
      | (?:text|example|message|query|sentence|item|version|rewrite)\s*\#?\d{0,3}\s*[:.)-]\s*
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_META = re.compile(
    r"""^\s*(?:here(?:'s|\s+is|\s+are)\b|sure\b|certainly\b|of\s+course\b|absolutely\b|okay\b|ok[,!.]
      |i(?:'m|\s+am)\s+(?:sorry|unable|not\s+able)|i\s+(?:cannot|can't|can\s+not|apologi[sz]e)
      |as\s+an\s+ai\b|note\s*:|i\s+hope\b|let\s+me\s+know\b|these\s+(?:texts|examples|messages)\b
      |(?:the\s+)?(?:following|below)\s+(?:are|is)\b)""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER = re.compile(
    r"^\s*(?:original|rewritten|label|intent|task|examples?\s+of|messages\s+with)\b[^:]{0,40}:", re.IGNORECASE
)
_QUOTES = "\"'“”‘’«»`"


@dataclass
class ParsedText:
    """One text found in an output; ``status`` is ``parsed`` or ``unusable`` (then ``reason`` says why)."""

    text: str
    status: str = "parsed"
    reason: str | None = None


def strip_marker(line: str) -> str:
    """Remove one list marker or numbering and surrounding quotes."""
    line = _MARKER.sub("", line, count=1).strip()
    while len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    if line.count('"') == 1 and line.startswith('"'):
        line = line[1:].strip()
    return line


def parse_output(raw: str, style: str = "list", finish_reason: str | None = None) -> list[ParsedText]:
    """Split one completion into texts.

    ``style``: ``list`` (continuation of an open list item: the first line belongs to the open item, later
    lines count only when they carry a list marker), ``rewrite`` (one text after ``Rewritten:``; stops at the
    next header) or ``chat`` (a reply listing texts, possibly with a preamble).
    """
    if raw is None or not raw.strip():
        return [ParsedText(text=raw or "", status="unusable", reason="empty")]
    truncated = finish_reason == "length"
    lines = raw.replace("\r\n", "\n").split("\n")
    # a truncated output's last line is cut unless the output ended right after a newline
    cut_last = truncated and not raw.endswith("\n")
    out: list[ParsedText] = []
    seen: set[str] = set()
    stop = False
    for idx, line in enumerate(lines):
        if stop:
            break
        is_last = idx == len(lines) - 1
        stripped = line.strip()
        if not stripped:
            if style in ("list", "rewrite") and out:
                stop = True  # a blank line ends a list continuation
            continue
        has_marker = bool(_MARKER.match(stripped))
        if style == "list" and idx > 0 and not has_marker:
            stop = True  # the model left the list (a new header, a comment)
            continue
        if _HEADER.match(stripped):
            if style == "rewrite" and out:
                stop = True
            continue
        text = strip_marker(stripped) if (has_marker or style != "list" or idx > 0) else _unquote(stripped)
        if not text:
            continue
        if _META.match(text):
            out.append(ParsedText(text=text, status="unusable", reason="meta_reply"))
            continue
        if cut_last and is_last:
            out.append(ParsedText(text=text, status="unusable", reason="truncated"))
            continue
        if len(text) < 3 or not re.search(r"[A-Za-z\u00C0-\uFFFF]", text):
            out.append(ParsedText(text=text, status="unusable", reason="too_short"))
            continue
        key = text.casefold()
        if key in seen:
            out.append(ParsedText(text=text, status="unusable", reason="duplicate_in_output"))
            continue
        seen.add(key)
        out.append(ParsedText(text=text))
        if style == "rewrite":
            stop = True
    if not out:
        out.append(ParsedText(text=raw.strip(), status="unusable", reason="no_text_found"))
    return out


def _unquote(text: str) -> str:
    return strip_marker(text) if text[:1] in _QUOTES else text.strip()
