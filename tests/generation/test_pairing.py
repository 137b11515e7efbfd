"""Choosing pairs from a prompt's samples: near duplicates never paired, one pair per prompt, each strategy."""
from __future__ import annotations

import random

import pytest

from generation.backends import Sample
from generation.pairing import choose_pairs, distinct, near_duplicate, round_robin_scores, similarity

A = "Paris is the capital of France. It is known for the Eiffel Tower and its museums."
A_SPACED = "paris is the capital of  France.  It is known for the Eiffel Tower and its museums."
A_NEAR = "Paris is the capital of France. It is known for the Eiffel Tower and its many museums."
B = "I am not sure, but I think the capital city might be Lyon or Marseille."
C = "France's capital is Paris."


def test_near_duplicate():
    assert near_duplicate(A, A) and near_duplicate(A, A_SPACED) and near_duplicate(A, A_NEAR)
    assert not near_duplicate(A, B) and not near_duplicate(A, C)
    assert near_duplicate("", "") and not near_duplicate("", "x")
    assert near_duplicate(A, C, threshold=0.1)
    assert similarity(A, B) < similarity(A, A_NEAR) < 1.0


def test_distinct_keeps_the_first_of_each_group_and_takes_samples():
    assert distinct([A, A_SPACED, B, A_NEAR, C, B]) == [A, B, C]
    samples = [Sample(A, [1], "stop", -1.0), Sample(A_NEAR, [2], "stop", -2.0), Sample(B, [3], "stop", -3.0)]
    assert distinct(samples) == [samples[0], samples[2]]


@pytest.mark.parametrize("strategy", ["random", "most_different", "best_worst"])
def test_near_duplicates_never_pair(strategy):
    texts = [A, A_NEAR, A_SPACED]
    scores = [0.0, 5.0, -5.0]
    assert choose_pairs(texts, strategy, scores=scores, rng=random.Random(1)) == []
    texts = [A, A_NEAR, B, A_SPACED]
    scores = [3.0, -9.0, 1.0, 9.0]
    for seed in range(20):
        pairs = choose_pairs(texts, strategy, scores=scores, rng=random.Random(seed))
        assert len(pairs) == 1
        i, j = pairs[0]
        assert not near_duplicate(texts[i], texts[j]) and 2 in (i, j)


def test_random_pairs_vary_with_the_rng_and_repeat_with_its_seed():
    texts = [A, B, C, "Something else entirely about cooking pasta."]
    picks = {choose_pairs(texts, "random", rng=random.Random(s))[0] for s in range(30)}
    assert len(picks) > 2
    assert choose_pairs(texts, rng=random.Random(5)) == choose_pairs(texts, rng=random.Random(5))


def test_most_different_and_best_worst():
    texts = [A, A_NEAR.replace("many", "famous"), B, C]
    i, j = choose_pairs(texts, "most_different")[0]
    assert similarity(texts[i], texts[j]) == min(
        similarity(texts[a], texts[b]) for a in range(4) for b in range(a + 1, 4))
    assert choose_pairs(texts, "best_worst", scores=[0.5, 2.0, -1.0, 0.0]) == [(1, 2)]  # best first
    # when best and worst are near duplicates, the widest gap between distinct samples wins
    assert choose_pairs([A, A_NEAR, B], "best_worst", scores=[5.0, -5.0, 0.0]) == [(0, 2)]


def test_more_pairs_on_request_never_reuse_a_sample():
    texts = [A, B, C, "Cooking pasta takes ten minutes.", "Dogs are loyal animals."]
    pairs = choose_pairs(texts, "random", rng=random.Random(0), max_pairs=3)
    assert len(pairs) == 2
    assert len({k for p in pairs for k in p}) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        choose_pairs([A, B], "longest")
    with pytest.raises(ValueError, match="score"):
        choose_pairs([A, B], "best_worst")
    with pytest.raises(ValueError, match="score"):
        choose_pairs([A, B], "best_worst", scores=[1.0])
    assert choose_pairs([A], "random") == [] and choose_pairs([], "most_different") == []


def test_round_robin_scores_rank_by_wins_with_ties_half_and_both_bad_none():
    quality = [3, 1, 2, 2, 1]  # samples 2 and 3 tie; 1 and 4 are bad: both bad together, losing to the rest

    def compare(i, j):
        if quality[i] == quality[j] == 1:
            return "both_bad"
        if quality[i] == quality[j]:
            return "tie"
        return "a" if quality[i] > quality[j] else "b"

    scores = round_robin_scores(5, compare)
    assert scores == [4.0, 0.0, 2.5, 2.5, 0.0]
    texts = ["Paris.", "I do not know.", "The capital is Paris.", "It is Paris, in France.", "No idea at all."]
    assert choose_pairs(texts, "best_worst", scores=scores) == [(0, 1)]


def test_round_robin_meets_every_two_once_in_a_drawn_order():
    seen = []

    def always_first(i, j):  # a judge with a pure position bias
        seen.append((i, j))
        return "a"

    wins = round_robin_scores(5, always_first, random.Random(1))
    assert sorted(tuple(sorted(p)) for p in seen) == [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert sum(wins) == 10
    # the order shown is drawn, so the biased judge does not simply rank by index
    assert wins != [4.0, 3.0, 2.0, 1.0, 0.0]
    assert any(i > j for i, j in seen)


def test_near_duplicate_answers_as_the_similarity_does_whatever_bound_decides_it():
    """near_duplicate asks the ratio's cheap upper bounds first (length, then shared words): it must answer exactly
    as similarity >= threshold, for texts each bound turns away and for those only the ratio decides."""
    import random

    from generation.pairing import near_duplicate, similarity

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["the", "a", ",", "."]
    cases = [("", "x"), ("Same text.", "same   TEXT."), ("a b c", "a b c d e f g h i j k")]
    for _ in range(300):
        a = [rng.choice(words) for _ in range(rng.randint(1, 60))]
        b = list(a) if rng.random() < 0.5 else [rng.choice(words) for _ in range(rng.randint(1, 60))]
        for _ in range(rng.randint(0, 6)):  # a few edits: some stay above 0.9, some fall under it
            if b:
                b[rng.randrange(len(b))] = rng.choice(words)
        if rng.random() < 0.3:
            rng.shuffle(b)  # the same words in another order: the shared-words bound passes, the ratio decides
        cases.append((" ".join(a), " ".join(b)))
    decided = {near_duplicate(a, b) for a, b in cases}
    assert decided == {True, False}
    for a, b in cases:
        for threshold in (0.5, 0.9):
            assert near_duplicate(a, b, threshold) == (similarity(a, b) >= threshold), (a, b, threshold)
