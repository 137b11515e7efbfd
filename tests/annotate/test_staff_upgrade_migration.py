"""Staff given no permission at all could do everything before staff status alone came to grant nothing: the upgrade
puts such staff in a group holding every permission of PrefLoop's apps, so they keep what they did; staff an
administrator had given permissions keep exactly those, and an instance with no such staff gets no group."""
from __future__ import annotations

import pytest

from tests.migrating import models_as_of

BEFORE = [("annotate", "0017_export_job")]
GROUP = "PrefLoop staff (every action)"


def _staff_with_some_permissions(old) -> None:
    """Before the upgrade: "looker", staff who may view versions, and "grouped", staff in a group that may change
    them (the models as of BEFORE)."""
    users, permissions = old.get_model("auth", "User"), old.get_model("auth", "Permission")
    looker = users.objects.create(username="looker", is_staff=True)
    looker.user_permissions.add(permissions.objects.get(codename="view_modelversion"))
    grouped = users.objects.create(username="grouped", is_staff=True)
    releasers = old.get_model("auth", "Group").objects.create(name="releasers")
    releasers.permissions.add(permissions.objects.get(codename="change_modelversion"))
    grouped.groups.add(releasers)


@pytest.mark.slow
def test_staff_with_no_permission_keep_every_action_and_others_keep_theirs(transactional_db):
    with models_as_of(BEFORE) as old:
        users, permissions = old.get_model("auth", "User"), old.get_model("auth", "Permission")
        users.objects.create(username="plain", is_staff=True)
        users.objects.create(username="gone", is_staff=True, is_active=False)
        users.objects.create(username="annotator")
        _staff_with_some_permissions(old)
        # as for a model this very migrate adds: its permissions are not made until post_migrate
        permissions.objects.filter(content_type__app_label="annotate", content_type__model="exportjob").delete()
    from django.contrib.auth.models import Group, User

    from prefloop.access import may

    def person(name):
        return User.objects.get(username=name)

    group = Group.objects.get(name=GROUP)
    assert list(group.user_set.values_list("username", flat=True)) == ["plain"]
    # what the pages and the API read, not the admin's deletes (which staff status alone never reached); and nothing
    # on the account itself, so narrowing the group narrows them (0019 once gave them the export permissions too)
    assert not group.permissions.filter(codename__startswith="delete_").exists()
    assert not person("plain").user_permissions.exists()
    for perm in ("generation.change_modelversion", "training.add_trainingrun", "training.change_trainingrun",
                 "annotate.add_exportjob", "annotate.add_importjob", "api.add_apitoken", "loop.add_looprun"):
        assert may(person("plain"), perm), perm
    exporting = {"annotate.view_exportjob", "annotate.add_exportjob", "annotate.change_exportjob"}  # migration 0019
    assert person("looker").get_all_permissions() == {"generation.view_modelversion", *exporting}
    assert person("grouped").get_all_permissions() == {"generation.change_modelversion", *exporting}
    assert not may(person("looker"), "training.add_trainingrun")
    assert not person("gone").groups.exists() and not person("annotator").groups.exists()


@pytest.mark.slow
def test_an_instance_with_no_such_staff_gets_no_group(transactional_db):
    with models_as_of(BEFORE) as old:
        users = old.get_model("auth", "User")
        users.objects.create(username="admin", is_staff=True, is_superuser=True)
        users.objects.create(username="annotator")
    from django.contrib.auth.models import Group

    assert not Group.objects.exists()


@pytest.mark.slow
def test_staff_given_some_permissions_keep_exporting(transactional_db):
    """Exporting needed staff status alone until exports became jobs, which need the export job's permissions: staff
    an administrator had given some permissions lost the Export button with the upgrade."""
    with models_as_of(BEFORE) as old:
        users, permissions = old.get_model("auth", "User"), old.get_model("auth", "Permission")
        _staff_with_some_permissions(old)
        users.objects.create(username="annotator")
        permissions.objects.filter(content_type__app_label="annotate", content_type__model="exportjob").delete()
    from django.contrib.auth.models import User

    from prefloop.access import may

    for name, kept in (("looker", "generation.view_modelversion"), ("grouped", "generation.change_modelversion")):
        person = User.objects.get(username=name)
        assert may(person, "annotate.add_exportjob") and may(person, "annotate.change_exportjob"), name
        assert may(person, kept) and not may(person, "training.add_trainingrun"), name
    assert not User.objects.get(username="annotator").user_permissions.exists()
