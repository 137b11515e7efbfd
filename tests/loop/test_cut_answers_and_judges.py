"""What a rule does not see: answers cut at the token limit never win a label or a pairing over finished ones;
an evaluation judge apart from the labelling judge; a noise wrapper that flips the share it says."""
import json
import random

import pytest
from django.core.management import call_command

from annotate.judging import label_pairs
from annotate.models import Label
from compare.models import Vote
from generation import services as gen
from generation.models import Prompt, Response
from judges import load_judge
from judges.noise import Noisy
from loop.models import LoopRun
from prefcore.outcomes import cut_rule
from tests.annotate.factories import make_pair
from tests.loop import judges_for_tests

LONGER = "judges.rules:longer_text"


def test_cut_rule_overrules_the_judge_only_when_exactly_one_answer_was_cut_and_not_for_both_bad():
    for judged in ("a", "b", "tie"):
        assert cut_rule(True, False, judged) == "b" and cut_rule(False, True, judged) == "a"
    for judged in ("a", "b", "tie", "both_bad"):
        assert cut_rule(True, True, judged) == judged and cut_rule(False, False, judged) == judged
    # an empty or looping finished answer is not made the chosen one: the rule decided before the judge was asked,
    # and a rule judge's "both bad" for an empty answer against a cut one was stored as the empty one winning
    assert cut_rule(True, False, "both_bad") == "both_bad" and cut_rule(False, True, "both_bad") == "both_bad"


def _cut(response: Response) -> Response:
    response.finish_reason = "length"
    response.save(update_fields=["finish_reason"])
    return response


def test_a_judge_labelling_never_chooses_a_cut_answer_over_a_finished_one(db):
    """longer_text prefers the longer answer; the longer one here was cut at the limit, so it must lose."""
    pairs = []
    for k in range(6):
        long_first = k % 2 == 0
        long_text, short_text = "a long answer that ran into the token limit and stopped in the mid", "Short, done."
        pair = make_pair(text_a=long_text if long_first else short_text, text_b=short_text if long_first else long_text)
        _cut(pair.response_a if long_first else pair.response_b)
        for response in (pair.response_a, pair.response_b):
            if response.finish_reason != "length":
                response.finish_reason = "stop"
                response.save(update_fields=["finish_reason"])
        pairs.append(pair)
    both_cut = make_pair(text_a="x " * 30, text_b="y")  # both cut: the judge decides as it likes
    _cut(both_cut.response_a), _cut(both_cut.response_b)
    summary = label_pairs(LONGER)
    assert summary.labels == 7
    for label in Label.objects.select_related("pair__response_a", "pair__response_b"):
        chosen = label.pair.response_a if label.choice == "a" else label.pair.response_b
        if label.pair_id == both_cut.pk:
            assert chosen.text.startswith("x")  # longer_text's own choice
        else:
            assert chosen.finish_reason == "stop" and chosen.text == "Short, done."


def test_an_empty_or_looping_finished_answer_against_a_cut_one_is_both_bad_not_chosen(db):
    """The rule decided before the judge was asked: a finished answer won over a cut one even when it was empty or
    repeated itself, which the rule judges call "both bad", and the broken answer was trained on as the chosen one
    (an outside review). The judge is asked now, and its "both bad" stands."""
    cut_text = "Here is a long and careful answer that goes on and on about the question and was cut in the"
    pairs = []
    for finished in (" ", "the same words " * 12):  # empty (make_pair fills in a text given none), looping
        pair = make_pair(text_a=finished, text_b=cut_text)
        pair.response_a.finish_reason = "stop"
        pair.response_a.save(update_fields=["finish_reason"])
        _cut(pair.response_b)
        pairs.append(pair)
    sound = make_pair(text_a="A short, finished answer.", text_b=cut_text)  # the rule still decides this one
    sound.response_a.finish_reason = "stop"
    sound.response_a.save(update_fields=["finish_reason"])
    _cut(sound.response_b)
    assert load_judge("judges.rules:length_target")("q", "", cut_text) == "both_bad"
    assert label_pairs("judges.rules:length_target").labels == 3
    choices = {label.pair_id: label.choice for label in Label.objects.all()}
    assert [choices[p.pk] for p in pairs] == ["both_bad", "both_bad"]
    assert choices[sound.pk] == "a"
    prompt = Prompt.objects.create(text="Say something.")
    scores = gen._judge_scores(load_judge("judges.rules:length_target"), "judges.rules:length_target", prompt,
                               ["", cut_text, "A short, finished answer."], [False, True, False], seed=0)
    # the empty finished sample wins nothing for being finished (it won over the cut one, decided without the judge)
    assert scores[0] == scores[1] == 0 and scores[2] > 0


def test_the_evaluation_judge_never_votes_a_cut_answer_over_a_finished_one(db):
    """The evaluation's judge was told nothing of cut answers: a judge that likes long answers voted for the
    candidate's cut one, and the loop's win-rate against base and the gate counted it."""
    from compare.services import judge_comparisons
    from tests.compare.conftest import make_comparison, make_version

    base, candidate = make_version("base"), make_version("round-1")
    cut_long = make_comparison(candidate, base, text_a="a long answer cut at the token limit in the middle of",
                               text_b="Short and done.", left_is_a=True)
    _cut(cut_long.response_a)
    both_finished = make_comparison(candidate, base, text_a="a longer finished answer.", text_b="Short.",
                                    left_is_a=False)
    from annotate.judging import judge_account

    account = judge_account(LONGER)
    votes = {v.comparison_id: v.outcome for v in judge_comparisons([cut_long, both_finished], load_judge(LONGER),
                                                                    LONGER, account)}
    assert votes[cut_long.pk] == "b"  # base's finished answer, not the candidate's longer cut one
    assert votes[both_finished.pk] == "a"  # the longer finished answer, as the judge likes


def test_pairing_by_judge_ranks_a_cut_sample_below_every_finished_one(db):
    prompt = Prompt.objects.create(text="Name a fruit.")
    texts = ["apple", "a very long answer that was cut at the limit", "banana, a yellow fruit", "pear"]
    cut = [False, True, False, False]
    scores = gen._judge_scores(load_judge(LONGER), LONGER, prompt, texts, cut, seed=0)
    best = max(range(4), key=lambda i: scores[i])
    assert best == 2  # the longest finished answer, not the longer cut one
    assert scores[1] < min(scores[i] for i in (0, 2, 3))


def _questions(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(5)
    return [(f"question {k}", "long " * rng.randint(3, 9), "short") for k in range(n)]


def test_the_noise_wrapper_flips_the_share_it_states_and_keeps_ties():
    noisy = load_judge(f"judges.noise:Noisy?judge={LONGER}&share=0.25&seed=3")
    assert isinstance(noisy, Noisy) and noisy.share == 0.25
    questions = _questions(4000)
    flipped = sum(noisy(*q) == "b" for q in questions)  # longer_text says "a" to every one of them
    # binomial: 4000 draws at p = 0.25 have a standard deviation of 27.4; five of them either side
    assert abs(flipped - 1000) < 5 * 27.4
    assert [noisy(*q) for q in questions[:50]] == [noisy(*q) for q in questions[:50]]  # same question, same answer
    assert noisy("q", "same", "same") == load_judge(LONGER)("q", "same", "same")  # a tie is kept
    other_seed = load_judge(f"judges.noise:Noisy?judge={LONGER}&share=0.25&seed=4")
    assert [noisy(*q) for q in questions[:200]] != [other_seed(*q) for q in questions[:200]]
    assert all(load_judge(f"judges.noise:Noisy?judge={LONGER}&share=0")(*q) == "a" for q in questions[:100])


def test_the_noise_wrapper_loads_its_judge_under_the_allow_list():
    from judges import JudgeError

    with pytest.raises(JudgeError, match="is not allowed"):
        load_judge("judges.noise:Noisy?judge=subprocess:Popen&share=0.1")
    with pytest.raises(JudgeError, match="share must be a number from 0 to 1"):
        load_judge(f"judges.noise:Noisy?judge={LONGER}&share=1.5")
    with pytest.raises(JudgeError, match="seed must be a whole number \\(got 'abc'\\)"):
        load_judge(f"judges.noise:Noisy?judge={LONGER}&share=0.5&seed=abc")


PARAMS = {
    "training": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "max_prompt_length": 64,
                 "warmup_ratio": 0.0},
    "sampling": {"max_new_tokens": 10, "temperature": 1.0, "top_p": 1.0},
}


def test_the_eval_judge_evaluates_and_only_evaluates(loop_base, capsys):
    loop_base[1](train=8, eval=3)
    judges_for_tests.EVAL_CALLS["n"] = 0
    evaluator = "tests.loop.judges_for_tests:counting_eval"
    call_command("run_loop", rounds=1, pairs=4, judge=LONGER, eval_judge=evaluator, tag="t", eval_limit=3, seed=1,
                 params=json.dumps(dict(PARAMS, data="all", pairing="random", sampling=dict(PARAMS["sampling"], n=2))))
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert judges_for_tests.EVAL_CALLS["n"] == 3  # one vote per eval prompt, none while labelling
    assert set(Vote.objects.values_list("judge", flat=True)) == {evaluator}
    assert set(Label.objects.values_list("annotator__username", flat=True)) == {f"judge:{LONGER}"}
    assert result["votes"]["ties"] == 3
    run = LoopRun.objects.get()
    assert run.params["eval_judge"] == evaluator


def test_the_bench_measures_the_flips_the_stored_labels_hold(db):
    """--label-noise P flips P of the noisy judge's decided verdicts, but fewer of the stored labels disagree with the
    clean judge (pairing ranks with the same noisy judge, ties are never flipped): the bench now says how many do."""
    from argparse import Namespace

    from bench.loop_efficacy import labelling_judge, measured_noise

    args = Namespace(judge=LONGER, label_noise=0.5, seed=3)
    for k in range(12):
        make_pair(text_a="a longer answer " * (1 + k % 3), text_b="short")
    make_pair(text_a="same", text_b="same")  # a tie: never flipped, and not counted
    assert label_pairs(labelling_judge(args)).labels == 13
    stored = {label.pair_id: label.choice for label in Label.objects.all()}
    flips = sum(choice == "b" for pk, choice in stored.items() if pk != max(stored))  # longer_text says "a" on each
    said = measured_noise(args)
    assert f"{flips} of the 12 stored labels --judge decides disagree with it" in said and 0 < flips < 12
