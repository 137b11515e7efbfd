"""Routing judges and judge accounts stored before judges were kept under one spelling are brought to it on upgrade:
a round whose routing judge was typed "judges.rules.length_target" was never routed by the judge labelling as
"judges.rules:length_target"."""
from __future__ import annotations

import pytest
from django.contrib.auth.hashers import make_password

from tests.migrating import models_as_of

BEFORE = [("annotate", "0012_assignment_served_in"), ("auth", "0012_alter_user_first_name_max_length")]


@pytest.mark.slow
def test_stored_judge_paths_are_brought_to_one_spelling(transactional_db):
    with models_as_of(BEFORE) as old:
        users, profiles = old.get_model("auth", "User"), old.get_model("annotate", "AnnotatorProfile")
        rounds = old.get_model("annotate", "LabellingRound")
        rounds.objects.create(number=1, route_judge=" judges.rules.length_target ")
        rounds.objects.create(number=2, route_judge="judges.llm:for_version?name=sft v2")
        rounds.objects.create(number=3)
        for name, path in (("j1", "judges.rules.prefer_list"), ("j2", "not a path"), ("p", "")):
            user = users.objects.create(username=name, password=make_password(None))
            profiles.objects.create(user=user, is_automatic=bool(path), judge_path=path)
    from annotate.models import AnnotatorProfile, LabellingRound

    assert dict(LabellingRound.objects.values_list("number", "route_judge")) == {
        1: "judges.rules:length_target", 2: "judges.llm:for_version?name=sft+v2", 3: ""}
    assert dict(AnnotatorProfile.objects.values_list("user__username", "judge_path")) == {
        "j1": "judges.rules:prefer_list", "j2": "not a path", "p": ""}
