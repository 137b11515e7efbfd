"""The judge contract: loading by name, what counts as a verdict, and errors that name the judge and the pair."""
import math
import re

import pytest

from judges import BUILT_IN_JUDGES, JudgeError, load_judge, normalise_verdict, swapped, verdict
from judges.rules import LengthTarget, PreferShorter, length_target


def always_b(prompt, a, b):
    return "b"


def shouts(prompt, a, b):
    return "A"


def explodes(prompt, a, b):
    raise RuntimeError("model server down")


NOT_CALLABLE = 42


def test_load_judge_by_colon_or_dotted_name(listed_test_judges):
    assert load_judge("judges.rules:length_target") is length_target
    assert load_judge("judges.rules.length_target") is length_target
    assert load_judge("tests.judges.test_contract:always_b")("p", "x", "y") == "b"


def test_load_judge_builds_a_factory_with_query_arguments():
    judge = load_judge("judges.rules:LengthTarget?target_words=3&tie_words=0")
    assert judge == LengthTarget(target_words=3, tie_words=0)
    assert judge("p", "One two three.", "One two three four five six.") == "a"


@pytest.mark.parametrize(("path", "message"), [
    ("judges.rules:PreferShorter?tie_words=abc", "tie_words must be a whole number (got 'abc')"),
    ("judges.rules:PreferShorter?tie_words=2.5", "tie_words must be a whole number"),
    ("judges.rules:PreferShorter?tie_words=-1", "tie_words must be >= 0"),
    ("judges.rules:LengthTarget?target_words=nan", "target_words must be a whole number (got 'nan')"),
    ("judges.rules:LengthTarget?target_words=inf", "target_words must be a whole number"),
    ("judges.noise:Noisy?judge=judges.rules:length_target&share=nan", "share must be a finite number (got 'nan')"),
    ("judges.noise:Noisy?judge=judges.rules:length_target&share=half", "share must be a number (got 'half')"),
])
def test_a_judge_argument_that_is_not_what_it_takes_is_refused_by_name_when_loaded(path, message):
    """Arguments were parsed as "a number if it reads as one, else text" whatever the judge took: tie_words=abc was
    accepted and the job failed on its first pair, after sampling, with a TypeError; target_words=nan was accepted
    and answered "b" for every pair, identical answers included, so labels and evaluations were noise."""
    with pytest.raises(JudgeError, match=re.escape(message)):
        load_judge(path)


def test_a_class_named_without_a_query_is_built_with_its_defaults():
    judge = load_judge("judges.rules:PreferShorter")
    assert judge == PreferShorter()
    assert judge("p", "One two three.", "One two three four five six seven.") == "a"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "expected a name"),
        ("nomodule", "expected 'package.module:attr'"),
        ("judges.nowhere:judge", "cannot import module 'judges.nowhere'"),
        ("judges.rules:nothing_here", "has no attribute 'nothing_here'"),
        ("tests.judges.test_contract:NOT_CALLABLE", "is not callable"),
        ("judges.rules:LengthTarget?target_words=0", "building it failed: ValueError: target_words must be >= 1"),
        ("judges.rules:LengthTarget?colour=red", "building it failed: TypeError"),
        ("judges.llm:LLMJudge", "building it failed: TypeError"),
    ],
)
def test_load_judge_errors_name_the_judge(path, message):
    allowed = [*BUILT_IN_JUDGES, path] if ":" in path else None  # on the list, so loading is tried
    with pytest.raises(JudgeError, match="judge") as err:
        load_judge(path, allowed=allowed)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [("a", "a"), ("b", "b"), ("tie", "tie"), ("both_bad", "both_bad"), (0.9, "a"), (0.1, "b"), (0.52, "tie"),
     (1, "a"), (0, "b"), ("A", None), ("left", None), (None, None), (True, None), (1.5, None), (-0.1, None),
     (math.nan, None), ([], None)],
)
def test_normalise_verdict(result, outcome):
    assert normalise_verdict(result) == outcome


def test_verdict_errors_name_the_judge_and_the_pair():
    with pytest.raises(JudgeError, match=r"judge 'x:shouts' on pair 7 returned 'A'; expected 'a', 'b'"):
        verdict(shouts, "x:shouts", "p", "a", "b", where="pair 7")
    with pytest.raises(JudgeError, match=r"judge 'x:explodes' on pair 3 raised RuntimeError: model server down"):
        verdict(explodes, "x:explodes", "p", "a", "b", where="pair 3")
    assert verdict(always_b, "x", "p", "a", "b") == "b"


def test_swapped():
    assert [swapped(o) for o in ("a", "b", "tie", "both_bad")] == ["b", "a", "tie", "both_bad"]
