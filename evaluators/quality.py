"""Cheap rule-based checks on a generated text (length, meta replies, copies, script, language, markup).

Includes the elimination rules of Evol-Instruct (WizardLM) that do not need an LLM: a rewrite identical to
its source (no information gain), refusals ("sorry" in a short reply), texts of only punctuation and stop
words, and words copied from the generation prompt ("#Rewritten Prompt#", "given prompt").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from activesynth.agent.config.filters import QualityOptions
from activesynth.evaluators.base import Candidate, Decision, Evaluator, FilterContext, register

__all__ = ["QualityRules", "normalize", "script_share", "stopword_language"]

_META = re.compile(
    r"^\s*(?:here(?:'s|’s| is| are)\b|sure[,!.]|certainly[,!.]|of course[,!.]|(?:ok|okay|great)[,!]? here\b"
    r"|below (?:is|are)\b|i(?:'d|’d| would) be happy to\b|as an ai\b)",
    re.IGNORECASE,
)
_META_ANYWHERE = re.compile(
    r"\bas an ai\b|\blanguage model\b|\bi am an ai\b|\bi'm an ai\b|\bhope this helps\b", re.IGNORECASE
)
_REFUSAL = re.compile(
    r"^\s*(?:(?:i(?:'m|’m| am) )?sorry,? (?:but )?(?:i|as)\b|i apologi[sz]e\b"
    r"|(?:unfortunately,? )?i (?:can(?:'|’)?not|can(?:'|’)t|am unable to|(?:'|’)m unable to|won(?:'|’)t)"
    r" (?:help|assist|provide|generate|create|write|comply|fulfil|do that))",
    re.IGNORECASE,
)
_PROMPT_WORDS = re.compile(
    r"#\s*(?:given|rewritten|created) prompt\s*#|\b(?:given|rewritten) prompt\b"
    r"|\bthe following (?:intent|label)\b"
    r"|^\s*(?:intent|label|category|class|query|message|example|text|output|answer|response|customer)"
    r"(?:\s*\d+)?\s*:",
    re.IGNORECASE,
)
_LIST_MARKUP = re.compile(r"(?m)^\s*(?:[-*•·]|\d{1,3}[.)]|[a-z][.)]|#{1,6})\s+|\*\*|__|```|^\s*>\s")
_TEMPLATE = re.compile(r"\{\{|\}\}|<\|[^>]*\|>|\[/?INST\]|<start_of_turn>|<end_of_turn>|<eos>|</?s>")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

_EN_STOP_WORDS = """a about above after again against all am an and any are as at be because been before
being below
between both but by can could did do does doing down during each few for from further had has have having he
her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours out over own same she should so some such than that the their theirs
them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself"""
_EN_STOP = frozenset(_EN_STOP_WORDS.split())
_OTHER_STOP = {
    "de": "der die das und ist nicht ich mit sich auf für dem den ein eine zu von auch es wie bei nach "
    "oder wenn aber noch kann mein meine ihr wir sind habe",
    "fr": "le la les et est pas je une des du pour dans que qui sur avec mon ma mes vous nous sont ai "
    "ce cette mais ou comment pourquoi",
    "es": "el la los las y es no yo una del para que con mi mis usted por como pero está son tengo "
    "cómo dónde puedo",
    "it": "il lo gli le e è non io una del per che con mio mia sono ho come ma della perché",
    "pt": "o os as e é não eu uma do da para que com meu minha você são tenho como mas onde",
    "nl": "de het een en is niet ik met van voor dat die op zijn mijn wij hoe waar",
}
_OTHER_STOP_SETS = {lang: frozenset(w.split()) - _EN_STOP for lang, w in _OTHER_STOP.items()}


def normalize(text: str) -> str:
    """Case-folded, NFKC, punctuation removed, whitespace collapsed: for exact-copy checks."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(text))


@lru_cache(maxsize=8192)
def _is_latin(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN")


def script_share(text: str) -> float | None:
    """Share of letters that are Latin; None when the text has no letters."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    return sum(_is_latin(ch) for ch in letters) / len(letters)


def stopword_language(words: Sequence[str]) -> tuple[str, int, int]:
    """(best non-English language, its stop-word count, English stop-word count) for lower-cased words."""
    en = sum(w in _EN_STOP for w in words)
    counts = {lang: sum(w in s for w in words) for lang, s in _OTHER_STOP_SETS.items()}
    lang = max(counts, key=counts.__getitem__)
    return lang, counts[lang], en


@register("quality")
class QualityRules(QualityOptions, Evaluator):
    """Drop texts that break simple rules; the reason lists every broken rule, the first one as code.

    Rules (codes): ``empty``, ``too_short``, ``too_long``, ``meta_reply``, ``refusal``, ``template_artifact``,
    ``prompt_words``, ``list_markup``, ``stopwords_only``, ``wrong_script``, ``wrong_language``,
    ``repetition``, ``copy_of_source`` (Evol rewrite equal to its source), ``copy_of_example`` (equal to a
    few-shot or real training text), ``copy_of_prompt`` (equal to a line of its prompt).
    """

    def judge(self, candidates: Sequence[Candidate], context: FilterContext) -> list[Decision]:
        examples: set[str] = set()
        if self.check_copies:
            examples = {normalize(t) for t in list(context.few_shot_texts) + list(context.real_texts)}
        prompt_lines: dict[str, set[str]] = {}
        out = []
        for cand in candidates:
            failed = self._failures(cand, examples, prompt_lines, context)
            if failed:
                out.append(
                    self.drop(f"{failed[0][0]}: " + "; ".join(d for _, d in failed), float(len(failed)))
                )
            else:
                out.append(self.keep("ok: all rules passed", 0.0))
        return out

    def _failures(
        self,
        cand: Candidate,
        examples: set[str],
        prompt_lines: dict[str, set[str]],
        context: FilterContext,
    ) -> list[tuple[str, str]]:
        text = cand.text
        stripped = text.strip()
        if not stripped:
            return [("empty", "empty text")]
        fails: list[tuple[str, str]] = []
        words = _WORD.findall(stripped.casefold())
        n_chars, n_words = len(stripped), len(words)
        if not words or all(w in _EN_STOP for w in words) and self.language == "en":
            fails.append(("stopwords_only", "only punctuation and stop words"))
        share = script_share(stripped)
        if self.language == "en" and share is not None and share < self.min_latin_share:
            fails.append(("wrong_script", f"Latin letters {share:.0%} < {self.min_latin_share:.0%}"))
        elif self.language == "en" and n_words >= 4:
            lang, other, en = stopword_language(words)
            if other >= 2 and other > en:
                fails.append(("wrong_language", f"looks like '{lang}' ({other} vs {en} English stop words)"))
        if n_chars < self.min_chars or n_words < self.min_words:
            fails.append(("too_short", f"{n_chars} chars, {n_words} words"))
        if n_chars > self.max_chars or n_words > self.max_words:
            fails.append(("too_long", f"{n_chars} chars, {n_words} words"))
        if _REFUSAL.search(stripped):
            fails.append(("refusal", "starts like a refusal or apology"))
        if _META.search(stripped) or _META_ANYWHERE.search(stripped):
            fails.append(("meta_reply", "talks about the task instead of being an example"))
        if _TEMPLATE.search(stripped):
            fails.append(("template_artifact", "chat or template tokens left in"))
        if _PROMPT_WORDS.search(stripped):
            fails.append(("prompt_words", "copies words of the generation prompt"))
        if _LIST_MARKUP.search(stripped) or stripped.count("\n") >= 2:
            fails.append(("list_markup", "list, heading or markdown markup left in"))
        if n_words >= 6:
            token, count = Counter(words).most_common(1)[0]
            if count / n_words > self.max_token_share and token not in _EN_STOP:
                fails.append(("repetition", f"'{token}' is {count} of {n_words} words"))
        if self.check_copies:
            norm = normalize(stripped)
            if cand.source_text is not None and norm == normalize(cand.source_text):
                fails.append(("copy_of_source", "rewrite equals its source text"))
            elif norm in examples:
                fails.append(("copy_of_example", "equals a few-shot or real training text"))
            prompt = context.prompts.get(cand.prompt_id) if cand.prompt_id else None
            if prompt:
                if cand.prompt_id not in prompt_lines:
                    prompt_lines[cand.prompt_id] = {normalize(line) for line in prompt.splitlines()} - {""}
                if norm in prompt_lines[cand.prompt_id] or normalize(prompt) == norm:
                    fails.append(("copy_of_prompt", "equals a line of its prompt"))
        return fails
