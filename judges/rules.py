"""Built-in rule judges: cheap, deterministic labellers for the headless loop, tests and benchmarks.

Every rule judge first rejects degenerate answers (empty, repetitive, cut off mid-sentence): a degenerate answer
never beats a sound one, and two degenerate answers are "both_bad". Only then does the rule itself decide.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import BOTH_BAD, TIE, A, B

_WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
_ENDS_SOUND = tuple('.!?:)]}"\'`*…»”’>|')
_ENDS_CUT = tuple(",;-–—(/&+=")
_DANGLING = {"and", "or", "but", "the", "a", "an", "of", "to", "in", "with", "for", "is", "are", "that", "which"}


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def repeated_ngram_share(tokens: list[str], n: int = 4) -> float:
    """Share of the n-grams of `tokens` that already occurred earlier in it (0 = no repetition)."""
    grams = [tuple(t.lower() for t in tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_cut_off(text: str) -> bool:
    """Ends mid-sentence: on a comma, an open bracket, a dangling "and"/"the", or a long line with no full stop."""
    text = text.rstrip()
    if not text:
        return False
    if text.endswith(_ENDS_CUT):
        return True
    if text.endswith(_ENDS_SOUND):
        return False
    last_line = text.splitlines()[-1].strip()
    last_words = words(last_line)
    if last_words and last_words[-1].lower() in _DANGLING:
        return True
    # A short last line is a list item, a heading or a sign-off; a long one without a stop was cut by the limit.
    return len(last_words) > 8 and not last_line.lstrip("-*•0123456789. ").startswith("#")


def degeneracy(text: str, *, max_repeated_share: float = 0.3) -> str:
    """Why an answer is degenerate ("empty", "repetitive", "cut off"), or "" when it is sound."""
    tokens = words(text)
    if not tokens:
        return "empty"
    if len(tokens) >= 12 and repeated_ngram_share(tokens) > max_repeated_share:
        return "repetitive"
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 3]
    if len(lines) >= 3 and len(set(lines)) <= len(lines) / 2:
        return "repetitive"
    if re.search(r"([^\s\-=_*#.])\1{19,}", text):
        return "repetitive"
    if is_cut_off(text):
        return "cut off"
    return ""


def sound_first(response_a: str, response_b: str) -> str | None:
    """The verdict degeneracy alone decides ("a", "b" or "both_bad"), or None when both answers are sound."""
    bad_a, bad_b = bool(degeneracy(response_a)), bool(degeneracy(response_b))
    if bad_a and bad_b:
        return BOTH_BAD
    if bad_a:
        return B
    if bad_b:
        return A
    return None


@dataclass(frozen=True)
class LengthTarget:
    """Prefers the sound answer whose length in words is nearer `target_words`; within `tie_words` of each other's
    distance, a tie. Load with "judges.rules:LengthTarget?target_words=60" or use `length_target` (40 words)."""

    target_words: int = 40
    tie_words: int = 4

    def __post_init__(self) -> None:
        if self.target_words < 1:
            raise ValueError(f"target_words must be >= 1 (got {self.target_words})")
        if self.tie_words < 0:
            raise ValueError(f"tie_words must be >= 0 (got {self.tie_words})")

    def __call__(self, prompt: str, response_a: str, response_b: str) -> str:
        decided = sound_first(response_a, response_b)
        if decided is not None:
            return decided
        off_a = abs(len(words(response_a)) - self.target_words)
        off_b = abs(len(words(response_b)) - self.target_words)
        if abs(off_a - off_b) <= self.tie_words:
            return TIE
        return A if off_a < off_b else B


@dataclass(frozen=True)
class PreferShorter:
    """Prefers the shorter sound answer (by words); within `tie_words`, a tie."""

    tie_words: int = 3

    def __post_init__(self) -> None:
        if self.tie_words < 0:
            raise ValueError(f"tie_words must be >= 0 (got {self.tie_words})")

    def __call__(self, prompt: str, response_a: str, response_b: str) -> str:
        decided = sound_first(response_a, response_b)
        if decided is not None:
            return decided
        n_a, n_b = len(words(response_a)), len(words(response_b))
        if abs(n_a - n_b) <= self.tie_words:
            return TIE
        return A if n_a < n_b else B


@dataclass(frozen=True)
class PreferList:
    """Prefers the sound answer laid out as a list (more list items wins); a different rule from length, for checking
    that the loop's defaults are not tuned to one judge."""

    def __call__(self, prompt: str, response_a: str, response_b: str) -> str:
        decided = sound_first(response_a, response_b)
        if decided is not None:
            return decided
        items_a, items_b = list_items(response_a), list_items(response_b)
        if items_a == items_b:
            return TIE
        return A if items_a > items_b else B


def list_items(text: str) -> int:
    return sum(bool(re.match(r"\s*(?:[-*•]|\d+[.)])\s+\S", line)) for line in text.splitlines())


def _by_characters(response_a: str, response_b: str, longer: bool) -> str:
    a, b = response_a.strip(), response_b.strip()
    if not a and not b:
        return BOTH_BAD
    if not a or not b:
        return A if a else B
    if len(a) == len(b):
        return TIE
    return A if (len(a) > len(b)) == longer else B


def longer_text(prompt: str, response_a: str, response_b: str) -> str:
    """The longer answer in characters wins, with no soundness check: the bias DPO is known to learn, as a baseline,
    and a judge that always decides on random text (tests); an empty answer loses, both empty are both bad."""
    return _by_characters(response_a, response_b, longer=True)


def shorter_text(prompt: str, response_a: str, response_b: str) -> str:
    """The shorter non-empty answer in characters wins, with no soundness check (a quick check on length drift)."""
    return _by_characters(response_a, response_b, longer=False)


def not_degenerate(prompt: str, response_a: str, response_b: str) -> str:
    """Only the degeneracy check: the sound answer wins, otherwise a tie (or both bad)."""
    return sound_first(response_a, response_b) or TIE


length_target = LengthTarget()
prefer_shorter = PreferShorter()
prefer_list = PreferList()
