"""Earlier versions took a person's account named "import" (with a password) for the import account: the upgrade
clears that mark, so the person's labels stop counting as imported, and leaves the real import account marked."""
from __future__ import annotations

import pytest
from django.contrib.auth.hashers import make_password

from tests.migrating import models_as_of

BEFORE = [("annotate", "0010_job_alive_at"), ("auth", "0012_alter_user_first_name_max_length")]


@pytest.mark.slow
def test_a_person_marked_as_the_import_account_is_unmarked_on_upgrade(transactional_db):
    with models_as_of(BEFORE) as old:
        users, profiles = old.get_model("auth", "User"), old.get_model("annotate", "AnnotatorProfile")
        person = users.objects.create(username="import", password=make_password("pw-person-123"))
        machine = users.objects.create(username="import-old", password=make_password(None))
        profiles.objects.create(user=person, is_import=True)
        profiles.objects.create(user=machine, is_import=True)
    from annotate.models import AnnotatorProfile

    assert dict(AnnotatorProfile.objects.values_list("user__username", "is_import")) == {"import": False,
                                                                                          "import-old": True}
