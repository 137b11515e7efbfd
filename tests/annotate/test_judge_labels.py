"""A judge labels the queued pairs blind, as its own automatic account; failures name it and keep earlier labels."""
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.judging import label_pairs
from annotate.models import AnnotatorProfile, Assignment, Label
from judges import JudgeError
from tests.annotate.factories import make_pair
from tests.loop import judges_for_tests

# The judges these tests label and vote with (tests/loop/judges_for_tests.py) are listed in settings.
pytestmark = pytest.mark.usefixtures("listed_test_judges")

GOOD = "tests.loop.judges_for_tests:prefers_good"


@pytest.fixture(autouse=True)
def _reset_calls():
    judges_for_tests.CALLS["n"] = 0


def _pairs(n):
    pairs = []
    for k in range(n):
        good_first = k % 2 == 0
        pairs.append(make_pair(text_a="GOOD answer" if good_first else "plain answer",
                               text_b="plain answer" if good_first else "GOOD answer"))
    return pairs


def test_the_judge_labels_every_queued_pair_as_an_automatic_annotator(db):
    _pairs(8)
    summary = label_pairs(GOOD)
    assert summary.labels == 8 and summary.outcomes == {"a": 4, "b": 4, "tie": 0, "both_bad": 0}
    labels = Label.objects.select_related("annotator", "pair__response_a")
    assert labels.count() == 8
    for label in labels:
        assert label.is_automatic and label.annotator.username == f"judge:{GOOD}"
        chosen = label.pair.response_a if label.choice == "a" else label.pair.response_b
        assert "GOOD" in chosen.text  # right whichever side it was shown on
    profile = AnnotatorProfile.objects.get(user__username=f"judge:{GOOD}")
    assert profile.is_automatic and profile.judge_path == GOOD
    assert label_pairs(GOOD).labels == 0  # nothing left to label


def test_limit(db):
    _pairs(5)
    assert label_pairs(GOOD, limit=2).labels == 2
    assert Label.objects.count() == 2


def test_a_judge_that_raises_stops_with_its_name_and_the_pair_and_earlier_labels_stay(db):
    _pairs(5)
    with pytest.raises(JudgeError, match=r"judge 'tests.loop.judges_for_tests:fails_on_third' on pair \d+ raised "
                                         r"ConnectionError: judge service unreachable"):
        label_pairs("tests.loop.judges_for_tests:fails_on_third")
    assert Label.objects.count() == 2
    # the pair it failed on is back in the queue, not held by the judge's lease
    assert not Assignment.objects.filter(state=Assignment.LEASED).exists()


def test_a_judge_that_returns_no_verdict_is_an_error(db):
    _pairs(2)
    with pytest.raises(JudgeError, match=r"returned 'maybe'; expected 'a', 'b', 'tie', 'both_bad'"):
        label_pairs("tests.loop.judges_for_tests:says_maybe")
    assert Label.objects.count() == 0


def test_label_pairs_command(db, capsys):
    _pairs(3)
    call_command("label_pairs", judge=GOOD, limit=2)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "judge": GOOD, "labels": 2, "a": 1, "b": 1, "tie": 0, "both_bad": 0, "withdrawn": 0}
    with pytest.raises(CommandError, match="label_pairs: judge 'nowhere.judge:x' is not allowed: the judges are "
                                           "judges.rules:length_target, .*PREFLOOP_JUDGES"):
        call_command("label_pairs", judge="nowhere.judge:x")
    with pytest.raises(CommandError, match="labels stored before it stay"):
        call_command("label_pairs", judge="tests.loop.judges_for_tests:says_maybe")


def test_two_judges_whose_names_differ_past_150_characters_label_as_two_accounts(db):
    """The account name was "judge:<path>" cut to 150 characters: a second judge differing only past the cut took
    the first one's account, labelled nothing ("its" pairs were done) and was credited with the first one's labels."""
    from django.contrib.auth import get_user_model

    from annotate.judging import judge_account

    noisy = "judges.noise:Noisy?judge=" + GOOD + "&share=0." + "0" * 120 + "1&seed="
    first, second = noisy + "1", noisy + "2"
    for _ in range(3):
        make_pair(text_a="GOOD answer", text_b="plain answer", labels_needed=2)
    assert label_pairs(first).labels == 3
    assert label_pairs(second).labels == 3
    for path in (first, second):
        account = judge_account(path)
        assert len(account.username) <= 150 and account.annotator_profile.judge_path == path
        assert Label.objects.filter(annotator=account).count() == 3
    assert get_user_model().objects.filter(username__startswith="judge:").count() == 2
    # an account named by the old cut is still its own judge's
    old = get_user_model().objects.create(username=f"judge:{noisy}9"[:150])
    AnnotatorProfile.objects.create(user=old, is_automatic=True, judge_path=noisy + "9")
    assert judge_account(noisy + "9") == old


def test_a_judge_given_one_jobs_pairs_labels_no_other_even_through_a_lease_it_held(db):
    """A loop's judge labels its round's pairs only. A lease its account held on another pair (left by a killed
    command or a lost worker, run out or not) was renewed and labelled all the same."""
    from datetime import timedelta

    from django.utils import timezone

    from annotate.judging import judge_account
    from generation.models import GenerationJob, ModelVersion

    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    job = GenerationJob.objects.create(version=base, total=1)
    peoples, mine = _pairs(2), _pairs(1)[0]
    mine.job = job
    mine.save(update_fields=["job"])
    account = judge_account(GOOD)
    Assignment.objects.create(pair=peoples[0], annotator=account, left_is_a=True,
                              expires_at=timezone.now() - timedelta(minutes=5))  # run out
    summary = label_pairs(GOOD, job=job)
    assert summary.labels == 1 and list(Label.objects.values_list("pair_id", flat=True)) == [mine.pk]
    assert not Assignment.objects.filter(pair__in=peoples).exists()  # given back to the queue, unlabelled


def test_a_judge_interrupted_mid_label_gives_its_pair_back(db, monkeypatch):
    """Ctrl-C (or any error but the judge's own) while the judge was asked left its lease open: the pair was held
    from everyone until the lease ran out."""
    import annotate.judging as judging

    pair = _pairs(1)[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(judging, "verdict", interrupted)
    monkeypatch.setattr(judging, "cut_rule", lambda a_cut, b_cut, judged: judged)
    with pytest.raises(KeyboardInterrupt):
        label_pairs(GOOD)
    assert not Assignment.objects.filter(pair=pair).exists() and not Label.objects.exists()
