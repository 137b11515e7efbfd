"""Agreement math against published worked examples, and the majority rule."""
import pytest

from annotate.agreement import cohen_kappa, krippendorff_alpha, majority


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_perfect_and_undefined():
    assert cohen_kappa([("a", "a"), ("b", "b"), ("tie", "tie")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None
    assert cohen_kappa([]) is None


def test_krippendorff_alpha_matches_krippendorffs_nominal_example():
    # Krippendorff (2011) "Computing Krippendorff's alpha": 4 coders, 12 units, missing values; nominal alpha 0.743
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[c[i] for c in coders if c[i] is not None] for i in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=0.001)


def test_four_outcomes_are_four_categories():
    # a tie and "both bad" disagree with each other as much as a and b do
    assert krippendorff_alpha([["tie", "both_bad"], ["a", "a"], ["b", "b"]]) < krippendorff_alpha(
        [["tie", "tie"], ["a", "a"], ["b", "b"]]
    )


def test_majority():
    assert majority(["a", "a", "b"]) == ("a", pytest.approx(2 / 3))
    assert majority(["a", "b"]) == (None, 0.5)
    assert majority(["tie", "tie", "a"])[0] == "tie"
    assert majority([]) == (None, 0.0)
