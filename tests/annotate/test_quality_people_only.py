"""People's figures are people's: a preference file imported onto pairs people labelled is stored under the import
account, and that account had counted as one more person in κ and α and, against the team, as the team's own
label noise (which a run's measured label agreement turns into label smoothing). Found by an outside review."""
from __future__ import annotations

import json

import pytest

from annotate import quality
from annotate.importers import import_preferences
from annotate.models import Label
from annotate.services import label_pair

from .factories import make_pair, make_user

pytestmark = pytest.mark.django_db


def _import_preference(tmp_path, pair, chosen, rejected) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": pair.prompt.text, "chosen": chosen.text, "rejected": rejected.text}) + "\n")
    import_preferences(path)


def test_an_imported_preference_is_not_a_third_person_in_kappa_and_alpha(tmp_path):
    x, y = make_user("xx"), make_user("yy")
    pairs = [make_pair(labels_needed=2) for _ in range(4)]
    for pair, (cx, cy) in zip(pairs, [("left", "left"), ("right", "right"), ("left", "right"), ("right", "right")], strict=True):
        label_pair(pair.pk, x, cx)
        label_pair(pair.pk, y, cy)
    before = quality.agreement()
    assert before.annotators == 2 and before.kappa is not None

    _import_preference(tmp_path, pairs[0], pairs[0].response_a, pairs[0].response_b)
    assert Label.objects.filter(pair=pairs[0]).count() == 3  # stored, under the import account

    after = quality.agreement()
    assert (after.annotators, after.overlapping_pairs, after.kappa, after.alpha) == \
        (before.annotators, before.overlapping_pairs, before.kappa, before.alpha)


def test_a_file_that_disagrees_with_a_person_is_not_the_peoples_label_noise(tmp_path):
    person = make_user("xx")
    pair = make_pair(labels_needed=1)
    label_pair(pair.pk, person, "left")  # the left side is a here
    _import_preference(tmp_path, pair, pair.response_b, pair.response_a)  # the file prefers b
    assert Label.objects.filter(pair=pair).count() == 2

    noise = quality.label_noise()
    assert noise.shared == 0 and noise.flip_rate is None


def test_a_judge_is_not_measured_against_an_imported_preference(tmp_path):
    """The judge's agreement with people (the trust routing gives it, the weight of its labels in training, the
    quality page's judge table) took an imported preference as people's majority. Found by a review of the fix
    above."""
    from annotate import routing, services
    from annotate.judging import judge_account

    judge = "judges.rules:length_target"
    pair = make_pair(labels_needed=3)
    services.label_pair(pair.pk, judge_account(judge), "left")  # the judge says a
    _import_preference(tmp_path, pair, pair.response_b, pair.response_a)  # the file says b; no person labelled it
    assert Label.objects.filter(pair=pair, is_automatic=False).count() == 1
    found = routing.judge_agreement(judge).get(None)
    assert found is None or found.pairs == 0
    assert [a.pairs for a in quality.judge_agreements() if a.tag is None] in ([], [0])

    person = make_user("xx")
    label_pair(pair.pk, person, "left")  # a person agrees with the judge: measured on that alone
    found = routing.judge_agreement(judge)[None]
    assert (found.pairs, found.agreed) == (1, 1)


def test_an_imported_preference_is_not_a_pair_people_were_served(tmp_path):
    """The queue's figures (pairs people labelled, their mean margin) counted a pair holding only an imported
    preference as served to people."""
    from annotate.models import LabellingRound

    round_ = LabellingRound.objects.create(number=3)
    pair = make_pair(round=round_, margin=0.5)
    _import_preference(tmp_path, pair, pair.response_a, pair.response_b)
    assert pair.labels.count() == 1
    (row,) = quality.queue_choices([3])
    assert row.served == 0
