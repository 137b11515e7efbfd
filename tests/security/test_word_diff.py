"""Row 9 of issue 17: the word diff on the label page grew about cubically (difflib's SequenceMatcher with
autojunk off): two 2,000-word answers with few shared words cost minutes per page load. The diff is now Myers'
O((N + M) D) algorithm with a budget of steps: similar answers are diffed in full, answers that share little are
shown unmarked, and the page says so. Work is counted in token comparisons, never timed."""
from __future__ import annotations

import random
import re

import pytest
from django.urls import reverse

from prefcore.text import MAX_DIFF_STEPS, kept_tokens, word_diff
from tests.annotate.factories import make_pair, make_prompt

_WORDS = re.compile(r"\s+|[^\s]+")


class Counted(str):
    """A token that counts how often it is compared."""

    comparisons = 0

    def __eq__(self, other):
        Counted.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def _answer(words: int, seed: int) -> str:
    """An answer of `words` words drawn from a large vocabulary of its own (few words shared with another seed)."""
    rng = random.Random(seed)
    vocabulary = [f"w{seed}x{rng.randrange(10**6)}" for _ in range(5000)]
    shared = ["the", "a", "of", "and"]
    return " ".join(rng.choice(shared) if rng.random() < 0.05 else rng.choice(vocabulary) for _ in range(words))


def _comparisons(left: str, right: str) -> tuple[int, bool]:
    a = [Counted(t) for t in _WORDS.findall(left)]
    b = [Counted(t) for t in _WORDS.findall(right)]
    Counted.comparisons = 0
    kept = kept_tokens(a, b)
    return Counted.comparisons, kept is not None


@pytest.mark.parametrize("words", [2000, 8000])
def test_answers_that_share_little_cost_a_bounded_number_of_comparisons(words):
    comparisons, diffed = _comparisons(_answer(words, 1), _answer(words, 2))
    assert not diffed  # given up: the page shows them unmarked
    # the budget, plus one comparison per token for the common start and end: the same bound at 2,000 and 8,000
    # words, where SequenceMatcher's work grew with the cube of the length
    assert comparisons <= MAX_DIFF_STEPS + 2 * 2 * words


def test_similar_long_answers_are_diffed_in_full_and_cheaply():
    left = _answer(2000, 3)
    words = left.split(" ")
    right_words = list(words)
    for i in (10, 500, 1500):
        right_words[i] = "CHANGED"
    right = " ".join(right_words)
    comparisons, diffed = _comparisons(left, right)
    assert diffed and comparisons < 20 * len(_WORDS.findall(left))  # about linear
    diff = word_diff(left, right)
    assert diff.shown and diff.right.count("<ins>CHANGED</ins>") == 3 and diff.left.count("<del>") == 3


def test_the_diff_keeps_a_longest_common_subsequence():
    rng = random.Random(7)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        kept_a, kept_b = kept_tokens(a, b)
        common_a = [t for t, keep in zip(a, kept_a, strict=True) if keep]
        assert common_a == [t for t, keep in zip(b, kept_b, strict=True) if keep]
        # the classic table: the kept tokens are as many as a longest common subsequence has
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a) - 1, -1, -1):
            for j in range(len(b) - 1, -1, -1):
                table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
        assert len(common_a) == table[0][0]


@pytest.mark.django_db
def test_the_label_page_with_two_long_different_answers_says_the_diff_was_skipped(client, annotator):
    left, right = _answer(2000, 4), _answer(2000, 5)
    make_pair(make_prompt(text="Write two thousand words."), left, right)
    client.force_login(annotator)
    html = client.get(reverse("annotate:label")).content.decode()
    assert html.count("share too little for a word diff") == 2
    assert "<del>" not in html and "<ins>" not in html
    # both answers are still on the page, whole
    assert left.split(" ")[-1] in html and right.split(" ")[-1] in html
