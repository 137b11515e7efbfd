"""Renaming `Round` to `LabellingRound` keeps every round's settings and every pair in its round."""
from __future__ import annotations

import pytest

from tests.migrating import models_as_of

BEFORE = [("annotate", "0006_queue_order_routing_closing"), ("contenttypes", "0002_remove_content_type_name"),
          ("auth", "0012_alter_user_first_name_max_length")]


@pytest.mark.slow
def test_rounds_made_before_the_rename_keep_their_settings_and_pairs(transactional_db):
    with models_as_of(BEFORE) as old:
        prompt = old.get_model("generation", "Prompt").objects.create(text="Name a fruit.")
        version = old.get_model("generation", "ModelVersion").objects.create(name="base", path="/x")
        responses = old.get_model("generation", "Response")
        a = responses.objects.create(prompt=prompt, version=version, text="apple")
        b = responses.objects.create(prompt=prompt, version=version, text="pear")
        round_ = old.get_model("annotate", "Round").objects.create(
            number=4, guidelines="Short wins.", labels_per_pair=3, queue_order="uncertain", close_width=0.2)
        old.get_model("annotate", "Pair").objects.create(prompt=prompt, response_a=a, response_b=b, round=round_,
                                                         labels_needed=3)
        permission = old.get_model("auth", "Permission")
        content_type = old.get_model("contenttypes", "ContentType").objects.get_or_create(app_label="annotate",
                                                                                          model="round")[0]
        change, _ = permission.objects.get_or_create(codename="change_round", content_type=content_type,
                                                     defaults={"name": "Can change round"})
        old.get_model("auth", "Group").objects.create(name="leads").permissions.add(change)
    from annotate.models import LabellingRound, Pair

    kept = LabellingRound.objects.get()
    assert (kept.number, kept.guidelines, kept.labels_per_pair, kept.queue_order, kept.close_width) == (
        4, "Short wins.", 3, "uncertain", 0.2)
    assert Pair.objects.get().round == kept and list(kept.pairs.all()) == [Pair.objects.get()]
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    lead = get_user_model().objects.create_user("lead", is_staff=True)
    lead.groups.add(Group.objects.get(name="leads"))
    assert lead.has_perm("annotate.change_labellinground"), "a grant made under the old name still holds"
