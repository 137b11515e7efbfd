"""Which of a prompt's K samples become a pair to label: near duplicates dropped (they make ties), then one pair
chosen at random, as the most different two, or best against worst by a score (mean log-prob, or a judge's
round robin, `round_robin_scores`). Pure functions; no Django.
"""
from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable, Sequence

STRATEGIES = ("random", "most_different", "best_worst")
_WORD = re.compile(r"\w+|[^\w\s]")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _words(a: str, b: str) -> tuple[list[str], list[str]] | float:
    """The two texts' words (and punctuation), case and spacing ignored; or their similarity when that needs no
    comparing (1.0: the same text, 0.0: one has no words)."""
    na, nb = _normalise(a), _normalise(b)
    if na == nb:
        return 1.0
    wa, wb = _WORD.findall(na), _WORD.findall(nb)
    if not wa or not wb:
        return 0.0
    return wa, wb


def similarity(a: str, b: str) -> float:
    """How alike two texts are, 0..1: the ratio of matching words (and punctuation), case and spacing ignored."""
    words = _words(a, b)
    if isinstance(words, float):
        return words
    return difflib.SequenceMatcher(None, *words, autojunk=False).ratio()


def near_duplicate(a: str, b: str, threshold: float = 0.9) -> bool:
    """True when two samples are the same or nearly so (similarity >= threshold), so a pair of them is a tie.

    The ratio's upper bounds are asked first, each cheaper than the next: two texts of lengths far apart, or with
    too few words in common, cannot reach the threshold. The ratio itself takes time in the square of the length
    at worst: imported answers are not bounded by a token limit, and a push of long ones held its request for
    minutes."""
    words = _words(a, b)
    if isinstance(words, float):
        return words >= threshold
    matcher = difflib.SequenceMatcher(None, *words, autojunk=False)
    return (matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold
            and matcher.ratio() >= threshold)


def _text(sample) -> str:
    return sample if isinstance(sample, str) else sample.text


def distinct(samples: Sequence, threshold: float = 0.9) -> list:
    """The samples (texts or objects with .text) with identical and near-identical ones dropped, first kept."""
    kept: list = []
    for sample in samples:
        if not any(near_duplicate(_text(sample), _text(k), threshold) for k in kept):
            kept.append(sample)
    return kept


def choose_pairs(
    texts: list[str], strategy: str = "random", scores: list[float] | None = None, rng: random.Random | None = None,
    *, max_pairs: int = 1, threshold: float = 0.9,
) -> list[tuple[int, int]]:
    """Pairs of indices into `texts` (at most `max_pairs`, one by default), never two near duplicates.

    random: a random pair of distinct samples; most_different: the least similar pair; best_worst: the highest
    against the lowest score (`scores` required, one per text) among distinct samples. Empty when fewer than two
    distinct samples exist.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"pairing strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "best_worst":
        if scores is None or len(scores) != len(texts):
            raise ValueError(f"best_worst pairing needs one score per sample ({len(texts)}), got "
                             f"{'none' if scores is None else len(scores)}")
    if max_pairs < 1:
        return []
    rng = rng or random.Random(0)
    n = len(texts)
    sim = {(i, j): similarity(texts[i], texts[j]) for i in range(n) for j in range(i + 1, n)}
    candidates = [(i, j) for (i, j), s in sim.items() if s < threshold]
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()

    def free(pair: tuple[int, int]) -> bool:
        return pair[0] not in used and pair[1] not in used

    if strategy == "random":
        rng.shuffle(candidates)
        ordered = candidates
    elif strategy == "most_different":
        ordered = sorted(candidates, key=lambda p: (sim[p], p))
    else:
        ordered = sorted(candidates, key=lambda p: (-abs(scores[p[0]] - scores[p[1]]), p))
    for pair in ordered:
        if len(pairs) >= max_pairs:
            break
        if free(pair):
            i, j = pair
            if strategy == "best_worst" and scores[j] > scores[i]:
                pair = (j, i)  # best first
            pairs.append(pair)
            used.update(pair)
    return pairs


def round_robin_scores(n: int, compare: Callable[[int, int], str], rng: random.Random | None = None) -> list[float]:
    """Each of n samples' wins when every two of them meet once: `compare(i, j)` answers "a" (i better), "b" (j
    better), "tie" (half a win each) or "both_bad" (none). Which sample is shown first is drawn from `rng`, so a
    judge with a position bias favours no index. K samples cost K(K-1)/2 calls.
    """
    rng = rng or random.Random(0)
    wins = [0.0] * n
    for i in range(n):
        for j in range(i + 1, n):
            first, second = (i, j) if rng.random() < 0.5 else (j, i)
            outcome = compare(first, second)
            if outcome == "a":
                wins[first] += 1
            elif outcome == "b":
                wins[second] += 1
            elif outcome == "tie":
                wins[first] += 0.5
                wins[second] += 0.5
    return wins
