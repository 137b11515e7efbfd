"""Verdicts the same under a swap of the answers, numpy probabilities read as verdicts, an LLM judge's margin kept to
what asking both orders means, and one spelling of each judge path."""
import numpy as np
import pytest

import judges
from judges import JudgeError, load_judge, normalise_verdict, swapped, verdict
from judges.llm import LLMJudge


@pytest.mark.parametrize("p", [0.45, 0.55, 0.449, 0.551, 0.3, 0.7, 0.5, 0.0, 1.0])
def test_a_probability_and_its_swap_give_mirrored_verdicts(p):
    # a probabilistic judge answering p for (x, y) answers 1 - p for (y, x)
    assert normalise_verdict(1 - p) == swapped(normalise_verdict(p))


def test_the_tie_band_holds_its_edges_on_both_sides():
    # abs(0.55 - 0.5) is 0.050000000000000044 in floating point: 0.55 was "a" where 0.45 was a tie
    assert normalise_verdict(0.45) == normalise_verdict(0.55) == "tie"
    assert (normalise_verdict(0.44), normalise_verdict(0.56)) == ("b", "a")


def test_a_probability_judge_asked_in_both_orders_agrees_with_itself():
    def judge(prompt, first, second):
        return 0.55 if first == "x" else 0.45

    assert verdict(judge, "p", "q", "x", "y") == swapped(verdict(judge, "p", "q", "y", "x")) == "tie"


@pytest.mark.parametrize(("answer", "expected"), [
    (np.float32(0.9), "a"), (np.float16(0.2), "b"), (np.float64(0.5), "tie"), (np.int64(1), "a"),
    (np.float32(1.5), None), (np.float32("nan"), None), (np.bool_(True), None), (True, None),
])
def test_numpy_numbers_are_probabilities_and_bools_are_not(answer, expected):
    assert normalise_verdict(answer) == expected


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("margin", ["-0.25", "0.5", "0.75"])
def test_an_llm_judge_refuses_a_margin_outside_0_to_a_half(folder, margin):
    # negative: "a" whatever the model read (its position bias); 0.5 or more: a tie whatever it read
    with pytest.raises(JudgeError, match=r"building it failed: ValueError: margin must be at least 0 and below 0.5, "
                                         rf"got {margin}"):
        load_judge(f"judges.llm:LLMJudge?model_dir={folder}&margin={margin}")
    with pytest.raises(ValueError, match="margin must be at least 0 and below 0.5"):
        LLMJudge(str(folder), margin=float(margin))


def test_an_llm_judge_built_in_code_refuses_a_margin_that_is_no_number(folder):
    with pytest.raises(ValueError, match="margin must be at least 0 and below 0.5, got nan"):
        LLMJudge(str(folder), margin=float("nan"))


def test_an_llm_judge_with_a_margin_in_range_follows_the_model(folder, monkeypatch):
    monkeypatch.setattr(LLMJudge, "first_is_better", lambda self, prompt, first, second: 0.3 if first == "x" else 0.7)
    assert load_judge(f"judges.llm:LLMJudge?model_dir={folder}&margin=0.1")("q", "x", "y") == "b"
    assert load_judge(f"judges.llm:LLMJudge?model_dir={folder}&margin=0.25")("q", "x", "y") == "tie"
    assert load_judge(f"judges.llm:LLMJudge?model_dir={folder}&margin=0")("q", "y", "x") == "a"


@pytest.mark.parametrize(("path", "canonical"), [
    ("judges.rules:length_target", "judges.rules:length_target"),
    ("judges.rules.length_target", "judges.rules:length_target"),
    ("  judges.rules:length_target \n", "judges.rules:length_target"),
    ("judges.rules.LengthTarget?target_words=40", "judges.rules:LengthTarget?target_words=40"),
    ("judges.llm:for_version?name=sft%2Bdpo", "judges.llm:for_version?name=sft%2Bdpo"),
    ("judges.rules:length_target?", "judges.rules:length_target"),
    # the arguments as load_judge reads them: one version's name written two ways is one judge (the forms encode it)
    ("judges.llm:for_version?name=sft v2", "judges.llm:for_version?name=sft+v2"),
    ("judges.llm:for_version?name=sft+v2", "judges.llm:for_version?name=sft+v2"),
    ("judges.llm:for_version?name=r%C3%A9sum%C3%A9", "judges.llm:for_version?name=r%C3%A9sum%C3%A9"),
    ("judges.llm:for_version?name=résumé", "judges.llm:for_version?name=r%C3%A9sum%C3%A9"),
])
def test_each_judge_path_has_one_canonical_spelling(path, canonical):
    assert judges.canonical_path(path) == canonical


def test_a_path_that_names_no_judge_has_no_canonical_spelling():
    with pytest.raises(JudgeError, match="expected 'package.module:attr'"):
        judges.canonical_path("not a judge")
