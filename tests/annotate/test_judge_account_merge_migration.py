"""One judge typed two ways before judges were kept under one spelling labelled as two accounts; the upgrade merges
them into the one lookups find, so the judge counts once on a pair both labelled and no verdict is lost."""
from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from tests.migrating import models_as_of

BEFORE = [("annotate", "0015_importjob_runner"), ("compare", "0007_comparejob_runner"),
          ("api", "0002_scrub_axes_form_data"), ("generation", "0008_generationjob_runner"),
          ("training", "0013_trainingrun_runner"), ("loop", "0004_looprun_runner"),
          ("auth", "0012_alter_user_first_name_max_length")]
PATH = "judges.rules:length_target"  # what 0013 made of both spellings


def _rows(old):
    get = old.get_model
    users, profiles = get("auth", "User"), get("annotate", "AnnotatorProfile")
    first = users.objects.create(username="judge:judges.rules.length_target", password=make_password(None))
    second = users.objects.create(username=f"judge:{PATH}", password=make_password(None))
    person = users.objects.create(username="ann", password=make_password(None))
    other_judge = users.objects.create(username="judge:judges.rules:prefer_list", password=make_password(None))
    for user, path in ((first, PATH), (second, PATH), (other_judge, "judges.rules:prefer_list")):
        profiles.objects.create(user=user, is_automatic=True, judge_path=path)
    return first, second, person, other_judge


def _pairs(old, count, tag="", **fields):
    prompts, responses = old.get_model("generation", "Prompt"), old.get_model("generation", "Response")
    pairs = old.get_model("annotate", "Pair")
    made = []
    for n in range(count):
        text = f"prompt {n} {tag}"
        prompt = prompts.objects.create(text=text, hash=hashlib.sha256(text.encode()).hexdigest())
        a = responses.objects.create(prompt=prompt, text=f"a{n}", source="test")
        b = responses.objects.create(prompt=prompt, text=f"b{n}", source="test")
        made.append(pairs.objects.create(prompt=prompt, response_a=a, response_b=b, **fields))
    return made


def _label(old, pair, user, choice, *, automatic=True):
    old.get_model("annotate", "Assignment").objects.create(
        pair=pair, annotator=user, left_is_a=True, state="done", expires_at=timezone.now())
    old.get_model("annotate", "Label").objects.create(pair=pair, annotator=user, choice=choice, side="left",
                                                       left_is_a=True, is_automatic=automatic)
    pair.labels_done += 1
    pair.save(update_fields=["labels_done"])


@pytest.mark.slow
def test_a_judges_two_accounts_are_merged_counting_it_once_and_keeping_every_differing_verdict(transactional_db):
    with models_as_of(BEFORE) as old:
        first, second, person, other_judge = _rows(old)
        rounds = old.get_model("annotate", "LabellingRound")
        open_round = rounds.objects.create(number=1)
        closed_round = rounds.objects.create(number=2, closed_at=timezone.now())
        same, only_second, differ, leased = _pairs(old, 4, round=open_round, labels_needed=3)
        (closed,) = _pairs(old, 1, round=closed_round, labels_needed=2, tag="closed")
        for pair in (same, closed):  # the judge's verdict stored twice
            _label(old, pair, first, "a")
            _label(old, pair, second, "a")
        _label(old, same, person, "b", automatic=False)
        _label(old, same, other_judge, "b")
        _label(old, only_second, second, "b")
        _label(old, differ, first, "a")
        _label(old, differ, second, "tie")
        old.get_model("annotate", "Assignment").objects.create(
            pair=leased, annotator=second, left_is_a=False, state="leased", expires_at=timezone.now())
        # votes, the same three ways
        versions, jobs = old.get_model("generation", "ModelVersion"), old.get_model("compare", "CompareJob")
        v1, v2 = (versions.objects.create(name=n, path=f"/m/{n}") for n in ("v1", "v2"))
        job = jobs.objects.create(version_a=v1, version_b=v2)
        comparisons, votes = old.get_model("compare", "Comparison"), old.get_model("compare", "Vote")
        made = [comparisons.objects.create(job=job, prompt=p.prompt, response_a=p.response_a, response_b=p.response_b)
                for p in (same, only_second, differ)]
        for comparison, (mine, theirs) in zip(made, (("a", "a"), (None, "b"), ("a", "b")), strict=True):
            if mine:
                votes.objects.create(comparison=comparison, voter=first, outcome=mine, is_automatic=True)
            votes.objects.create(comparison=comparison, voter=second, outcome=theirs, is_automatic=True)
        ids = {"first": first.pk, "second": second.pk, "person": person.pk, "other": other_judge.pk}
        pair_ids = {"same": same.pk, "only_second": only_second.pk, "differ": differ.pk, "leased": leased.pk,
                    "closed": closed.pk}
        comparison_ids = [c.pk for c in made]

    from annotate.judging import judge_account
    from annotate.models import Assignment, Label, Pair
    from compare.models import Vote

    labels = {(pk, user): choice for pk, user, choice in Label.objects.values_list("pair_id", "annotator_id", "choice")}
    assert labels == {
        (pair_ids["same"], ids["first"]): "a", (pair_ids["same"], ids["person"]): "b",
        (pair_ids["same"], ids["other"]): "b",
        (pair_ids["closed"], ids["first"]): "a",
        (pair_ids["only_second"], ids["first"]): "b",  # moved to the account lookups find
        (pair_ids["differ"], ids["first"]): "a", (pair_ids["differ"], ids["second"]): "tie",  # both verdicts kept
    }
    counts = dict(Pair.objects.values_list("pk", "labels_done"))
    assert counts[pair_ids["same"]] == 3 and counts[pair_ids["closed"]] == 1
    needed = dict(Pair.objects.values_list("pk", "labels_needed"))
    assert needed[pair_ids["same"]] == 3, "an open round's pair asks for the label it lacks"
    assert needed[pair_ids["closed"]] == 1, "a closed round's pair does not reopen"
    # every label has its annotator's lease row, done; the second account's open lease went back to the queue
    rows = set(Assignment.objects.values_list("pair_id", "annotator_id", "state"))
    assert rows == {(pair, user, "done") for pair, user in labels}
    outcomes = {(c, v): o for c, v, o in Vote.objects.values_list("comparison_id", "voter_id", "outcome")}
    assert outcomes == {(comparison_ids[0], ids["first"]): "a", (comparison_ids[1], ids["first"]): "b",
                        (comparison_ids[2], ids["first"]): "a", (comparison_ids[2], ids["second"]): "b"}
    assert judge_account("judges.rules.length_target").pk == ids["first"]


@pytest.mark.slow
def test_a_second_account_with_nothing_left_is_deleted_and_its_other_rows_move(transactional_db):
    with models_as_of(BEFORE) as old:
        first, second, _person, _other = _rows(old)
        (pair,) = _pairs(old, 1, labels_needed=2)
        _label(old, pair, first, "a")
        _label(old, pair, second, "a")
        old.get_model("api", "ApiToken").objects.create(user=second, name="pipeline", prefix="pl_x",
                                                        digest="d" * 64)
        version = old.get_model("generation", "ModelVersion").objects.create(name="base", path="/m/base")
        old.get_model("generation", "GenerationJob").objects.create(version=version, created_by=second)
        # a link with no reverse name (related_name="+"), which deleting the account would have set to NULL
        old.get_model("generation", "VersionChange").objects.create(version=version, action="by_hand", user=second)
        ids = first.pk, second.pk

    from django.contrib.auth import get_user_model

    from annotate.models import AnnotatorProfile, Label
    from api.models import ApiToken
    from generation.models import GenerationJob, VersionChange

    assert not get_user_model().objects.filter(pk=ids[1]).exists()
    assert list(AnnotatorProfile.objects.filter(judge_path=PATH).values_list("user_id", flat=True)) == [ids[0]]
    assert list(Label.objects.values_list("annotator_id", flat=True)) == [ids[0]]
    assert list(ApiToken.objects.values_list("user_id", flat=True)) == [ids[0]]
    assert list(GenerationJob.objects.values_list("created_by_id", flat=True)) == [ids[0]]
    assert list(VersionChange.objects.values_list("user_id", flat=True)) == [ids[0]]


@pytest.mark.slow
def test_a_moved_label_whose_lease_row_was_left_open_is_done_beside_the_first_accounts_own_lease(transactional_db):
    with models_as_of(BEFORE) as old:
        first, second, _person, _other = _rows(old)
        labelled, leased = _pairs(old, 2, labels_needed=2)
        _label(old, labelled, second, "a")
        assignments = old.get_model("annotate", "Assignment")
        assignments.objects.filter(annotator=second).update(state="leased")  # old data: a label beside an open lease
        assignments.objects.create(pair=leased, annotator=first, left_is_a=True, state="leased",
                                   expires_at=timezone.now())
        ids = first.pk, labelled.pk, leased.pk

    from annotate.models import Assignment, Label

    assert list(Label.objects.values_list("annotator_id", "pair_id")) == [(ids[0], ids[1])]
    assert set(Assignment.objects.values_list("annotator_id", "pair_id", "state")) == {
        (ids[0], ids[1], "done"), (ids[0], ids[2], "leased")}
