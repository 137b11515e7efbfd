"""Rule judges: degenerate answers never win; the length target decides between sound ones."""
import pytest

from judges.rules import LengthTarget, PreferList, PreferShorter, degeneracy, is_cut_off, not_degenerate

SOUND = "Paris is the capital of France. It sits on the Seine."


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   \n ...", "empty"),
        ("I like cats and I like dogs. " * 6, "repetitive"),
        ("Buy now!\nBuy now!\nBuy now!\nBuy now!", "repetitive"),
        ("Sure" + "!" * 40, "repetitive"),
        ("The three main reasons are that the economy grew quickly while the government kept spending on", "cut off"),
        ("Here are the steps you should follow,", "cut off"),
        (SOUND, ""),
        ("Steps:\n1. Boil water\n2. Add pasta", ""),
        ("Use `print(x)`", ""),
    ],
)
def test_degeneracy(text, why):
    assert degeneracy(text) == why


def test_a_short_list_item_at_the_end_is_not_cut_off():
    assert not is_cut_off("You will need:\n- flour\n- two eggs")
    assert is_cut_off("You will need flour, two eggs and a large bowl to mix them in before you put the")


def test_length_target_prefers_the_nearer_sound_answer_and_is_symmetric():
    judge = LengthTarget(target_words=10, tie_words=1)
    ten = "One two three four five six seven eight nine ten."
    three = "One two three."
    twenty = " ".join(["word"] * 19) + " end."
    assert judge("p", ten, three) == "a" and judge("p", three, ten) == "b"
    assert judge("p", twenty, ten) == "b"
    assert judge("p", ten, ten) == "tie"
    assert judge("p", "", three) == "b"  # degenerate never wins, however near the target
    assert judge("p", "", "spam spam spam spam spam spam spam spam spam spam spam spam") == "both_bad"


def test_other_rules():
    assert PreferShorter()("p", "Yes, it is.", SOUND) == "a"
    assert PreferList()("p", SOUND, "Two things:\n- bread\n- milk") == "b"
    assert not_degenerate("p", SOUND, "") == "a" and not_degenerate("p", SOUND, SOUND) == "tie"


def test_character_length_judges_always_decide_unless_equal():
    from judges.rules import longer_text, shorter_text

    assert longer_text("p", "abc", "ab") == "a" and shorter_text("p", "abc", "ab") == "b"
    assert longer_text("p", "  ", "x") == "b" and shorter_text("p", "  ", "x") == "b"  # empty loses either way
    assert longer_text("p", "", " ") == shorter_text("p", "", "") == "both_bad"
    assert longer_text("p", "ab", "cd") == "tie"
