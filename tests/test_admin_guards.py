"""What the admin must not do, done through it as staff do: delete a job a worker is running (or one a running loop
run still reads), a labelling round with pairs, or the current version; add, change or delete a label behind its
pair's count; run a state-changing action for staff who may only look; answer axes' "Clean up expired attempts"
with a 500. And what it must say: how many runs a Cancel stopped, and that a round without a judge routes nothing."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.utils import timezone

from annotate.models import Label, LabellingRound, Pair
from compare.models import CompareJob
from generation.models import GenerationJob, ModelVersion
from jobs.models import Status
from loop.models import LoopRun
from training.models import TrainingRun

from .annotate.factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def said(response) -> str:
    """Every message the admin showed (or queued for the next page) on this request, one per line."""
    return "\n".join(str(m) for m in get_messages(response.wsgi_request))


def version(name: str, **fields) -> ModelVersion:
    return ModelVersion.objects.create(name=name, path=f"/nonexistent/{name}", **fields)


def make_job(kind, status, **fields):
    """A job of `kind` in `status`, made directly (no worker runs it); each gets its own versions, as a training
    run's input may have one active run only."""
    n = make_job.count = getattr(make_job, "count", 0) + 1
    if kind is GenerationJob:
        return GenerationJob.objects.create(version=version(f"g{n}"), params={}, status=status, **fields)
    if kind is TrainingRun:
        return TrainingRun.objects.create(input_version=version(f"t{n}"), status=status, **fields)
    if kind is CompareJob:
        return CompareJob.objects.create(version_a=version(f"a{n}"), version_b=version(f"b{n}"), status=status,
                                         **fields)
    return LoopRun.objects.create(judge="judges.rules:prefer_list", status=status, **fields)


def admin_url(model, *parts) -> str:
    return "/".join(["", "admin", model._meta.app_label, model._meta.model_name, *map(str, parts), ""])


def delete_one(client, obj):
    """The row's delete page, confirmed."""
    return client.post(admin_url(type(obj), obj.pk, "delete"), {"post": "yes"})


def delete_selected(client, model, *objs):
    """The list's "Delete selected", confirmed."""
    return client.post(admin_url(model), {"action": "delete_selected", "_selected_action": [o.pk for o in objs],
                                          "post": "yes"})


def exists(obj) -> bool:
    return type(obj).objects.filter(pk=obj.pk).exists()


JOB_KINDS = [GenerationJob, TrainingRun, CompareJob, LoopRun]


# -- 1. jobs a worker runs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", JOB_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.CANCELLING])
def test_an_active_job_is_not_deleted_from_its_page_and_the_reason_is_shown(client, staff, kind, status):
    job = make_job(kind, status)
    client.force_login(staff)
    response = delete_one(client, job)
    assert response.status_code == 302 and exists(job)
    assert f"is {status}" in said(response) and "cancel it" in said(response)


@pytest.mark.parametrize("kind", JOB_KINDS, ids=lambda k: k.__name__)
def test_delete_selected_refuses_a_selection_holding_an_active_job_and_deletes_an_ended_one(client, staff, kind):
    running, ended = make_job(kind, Status.RUNNING), make_job(kind, Status.SUCCEEDED)
    client.force_login(staff)
    response = delete_selected(client, kind, running, ended)
    assert response.status_code == 302 and exists(running) and exists(ended)  # none of the selection goes
    assert "Nothing deleted" in said(response) and f"{running.pk} is running" in said(response)
    assert delete_selected(client, kind, ended).status_code == 302 and not exists(ended)


@pytest.mark.parametrize("kind", [GenerationJob, TrainingRun, CompareJob], ids=lambda k: k.__name__)
def test_an_ended_part_of_a_running_loop_run_is_not_deleted(client, staff, kind):
    """The loop reads its finished parts again (to resume a round, to name the version a round made)."""
    loop = make_job(LoopRun, Status.RUNNING)
    part = make_job(kind, Status.SUCCEEDED, part_of=loop.key)
    client.force_login(staff)
    for response in (delete_one(client, part), delete_selected(client, kind, part)):
        assert response.status_code == 302 and exists(part)
        assert f"part of loop run {loop.pk}, still running" in said(response)


def test_an_ended_loop_run_whose_part_still_runs_is_not_deleted(client, staff):
    """Only the loop run ends its parts (the queue leaves them to it): without it, the part stays active for ever."""
    loop = make_job(LoopRun, Status.CANCELLED)
    part = make_job(TrainingRun, Status.CANCELLING, part_of=loop.key)
    client.force_login(staff)
    for response in (delete_one(client, loop), delete_selected(client, LoopRun, loop)):
        assert response.status_code == 302 and exists(loop)
        assert f"training run {part.pk} inside loop run {loop.pk} is still cancelling" in said(response)
    TrainingRun.objects.filter(pk=part.pk).update(status=Status.CANCELLED)
    assert delete_one(client, loop).status_code == 302 and not exists(loop)


# -- 2. rounds with pairs -------------------------------------------------------------------------------------------

def test_a_round_with_pairs_is_not_deleted_and_its_pairs_keep_it(client, staff):
    round_, empty = make_round(), make_round()
    pair = make_pair(round=round_)
    client.force_login(staff)
    for response in (delete_one(client, round_), delete_selected(client, LabellingRound, round_, empty)):
        assert response.status_code == 302 and exists(round_) and exists(empty)
        assert f"{round_} has 1 pair(s)" in said(response)
    assert Pair.objects.get(pk=pair.pk).round_id == round_.pk
    assert delete_one(client, empty).status_code == 302 and not exists(empty)


# -- 3. labels: shown, never edited ----------------------------------------------------------------------------------

@pytest.fixture
def labelled_pair():
    pair = make_pair(labels_needed=2)
    label = Label.objects.create(pair=pair, annotator=make_user(), choice="a", side="left",
                                 left_is_a=True)
    Pair.objects.filter(pk=pair.pk).update(labels_done=1)  # as the labelling pages count it
    return pair, label


def test_a_label_is_not_added_changed_or_deleted_in_the_admin(client, staff, labelled_pair):
    pair, label = labelled_pair
    client.force_login(staff)
    form = {"pair": pair.pk, "annotator": label.annotator_id, "choice": "b", "side": "right", "left_is_a": "on",
            "strength": "", "comment": "", "preference_prob": "0.5", "seconds": "2"}
    assert client.post(admin_url(Label, "add"), form).status_code == 403
    assert client.post(admin_url(Label, label.pk, "change"), form).status_code == 403
    assert client.get(admin_url(Label, label.pk, "change")).status_code == 200  # still shown
    response = delete_one(client, label)
    assert response.status_code == 302 and "a label goes only with its pair" in said(response)
    delete_selected(client, Label, label)
    assert list(Label.objects.values_list("pk", "choice")) == [(label.pk, "a")]
    assert Pair.objects.get(pk=pair.pk).labels_done == 1


def test_a_pairs_labels_and_its_count_are_read_only_on_its_page_and_go_with_it(client, staff, labelled_pair):
    pair, label = labelled_pair
    client.force_login(staff)
    page = client.get(admin_url(Pair, pair.pk, "change")).content.decode()
    assert 'name="labels_done"' not in page and 'name="labels-0-choice"' not in page
    form = {"prompt": pair.prompt_id, "response_a": pair.response_a_id, "response_b": pair.response_b_id,
            "origin": "generated", "labels_needed": "2", "labels_done": "7", "round": "", "gold_choice": "",
            "route": "", "margin": "", "margin_version": "", "job": "",
            "labels-TOTAL_FORMS": "1", "labels-INITIAL_FORMS": "1", "labels-MIN_NUM_FORMS": "0",
            "labels-MAX_NUM_FORMS": "1000", "labels-0-id": label.pk, "labels-0-pair": pair.pk,
            "labels-0-choice": "b", "labels-0-DELETE": "on"}
    assert client.post(admin_url(Pair, pair.pk, "change"), form).status_code == 302
    assert Pair.objects.get(pk=pair.pk).labels_done == 1
    assert list(Label.objects.values_list("pk", "choice")) == [(label.pk, "a")]
    # deleting the pair still takes its labels along (Django asks the label admin whether they may go)
    assert delete_one(client, pair).status_code == 302 and not exists(pair) and not exists(label)


# -- 4. actions that change state, for staff who may only look ------------------------------------------------------

@pytest.fixture
def looker(client):
    """Staff with view permission only, on the models whose actions change state."""
    person = make_user("looker", is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=[
        "view_modelversion", "view_labellinground", "view_trainingrun", "view_looprun"]))
    client.force_login(person)
    return person


def test_staff_who_may_only_look_cannot_run_actions_that_change_state(client, looker):
    base, other = version("base", is_current=True), version("other")
    round_ = make_round()
    run, loop = make_job(TrainingRun, Status.QUEUED), make_job(LoopRun, Status.QUEUED)
    for model, action, obj in [(ModelVersion, "make_current", other), (ModelVersion, "generate_pairs", other),
                               (LabellingRound, "close_now", round_), (LabellingRound, "route_now", round_),
                               (TrainingRun, "cancel_runs", run), (LoopRun, "cancel_runs", loop)]:
        listing = client.get(admin_url(model))
        assert listing.status_code == 200 and f'value="{action}"' not in listing.content.decode(), action
        client.post(admin_url(model), {"action": action, "_selected_action": [obj.pk]})
    assert ModelVersion.objects.current() == base and not GenerationJob.objects.exists()
    assert LabellingRound.objects.get(pk=round_.pk).closed_at is None
    assert TrainingRun.objects.get(pk=run.pk).status == LoopRun.objects.get(pk=loop.pk).status == Status.QUEUED


def test_a_versions_change_permission_does_not_start_generation_from_the_admin(client):
    """Staff given a version's change permission (to promote, say) but not generation.add_generationjob: the
    Generate page refused them, and the admin's "Generate pairs" queued a job for each selected version."""
    other = version("other", is_current=True)
    person = make_user("releaser", is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=["view_modelversion", "change_modelversion"]))
    client.force_login(person)
    listing = client.get(admin_url(ModelVersion)).content.decode()
    assert 'value="make_current"' in listing and 'value="generate_pairs"' not in listing
    client.post(admin_url(ModelVersion), {"action": "generate_pairs", "_selected_action": [other.pk]})
    assert not GenerationJob.objects.exists()
    person.user_permissions.add(Permission.objects.get(codename="add_generationjob"))
    assert 'value="generate_pairs"' in client.get(admin_url(ModelVersion)).content.decode()


# -- 5. axes' clean-up action ---------------------------------------------------------------------------------------

def test_clean_up_expired_attempts_deletes_the_expired_ones_instead_of_a_500(client, staff, settings):
    client.force_login(staff)  # first: axes cleans up expired attempts on a sign-in too
    old = AccessAttempt.objects.create(username="old", ip_address="10.0.0.1", failures_since_start=3,
                                       user_agent="", get_data="", post_data="", http_accept="", path_info="/")
    AccessAttempt.objects.filter(pk=old.pk).update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME
                                                   - timedelta(minutes=1))
    fresh = AccessAttempt.objects.create(username="fresh", ip_address="10.0.0.2", failures_since_start=3,
                                         user_agent="", get_data="", post_data="", http_accept="", path_info="/")
    response = client.post("/admin/axes/accessattempt/", {"action": "cleanup_expired_attempts",
                                                          "_selected_action": [old.pk, fresh.pk]})
    assert response.status_code == 302 and "Cleaned up 1 expired access attempts" in said(response)
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["fresh"]


# -- 6. what Cancel and route_now say -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, named", [(TrainingRun, "training run"), (LoopRun, "loop run")])
def test_cancel_says_how_many_were_asked_to_stop_and_how_many_had_finished(client, staff, kind, named):
    queued, done = make_job(kind, Status.QUEUED), make_job(kind, Status.SUCCEEDED)
    client.force_login(staff)
    response = client.post(admin_url(kind), {"action": "cancel_runs", "_selected_action": [queued.pk, done.pk]})
    assert response.status_code == 302
    assert f"1 {named} asked to stop ({queued.pk})" in said(response)
    assert f"1 {named} had already finished, left as they were ({done.pk}: succeeded)" in said(response)
    assert kind.objects.get(pk=queued.pk).status == Status.CANCELLED
    assert kind.objects.get(pk=done.pk).status == Status.SUCCEEDED


def test_route_now_on_a_round_without_a_judge_says_so(client, staff):
    round_ = make_round(route_judge="")
    make_pair(round=round_)
    client.force_login(staff)
    response = client.post(admin_url(LabellingRound), {"action": "route_now", "_selected_action": [round_.pk]})
    assert response.status_code == 302
    assert f"{round_} has no route judge, so nothing was routed" in said(response)
    assert "to the judge" not in said(response)


# -- 7. the current version -----------------------------------------------------------------------------------------

def test_the_current_version_is_not_deleted(client, staff):
    current, old = version("current", is_current=True), version("old")
    client.force_login(staff)
    for response in (delete_one(client, current), delete_selected(client, ModelVersion, current, old)):
        assert response.status_code == 302 and exists(current) and exists(old)
        assert "current is the current version" in said(response)
    assert delete_one(client, old).status_code == 302 and not exists(old)


def test_closing_rounds_from_the_admin_says_which_closed_and_which_were_closed_already(client):
    """"Close labelling now" came back with no word when it worked (an outside probe): only a round closed already
    was said. Each round closed is now said, beside the warning for one that was closed."""
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    open_round, closed = make_round(number=7), make_round(number=8)
    closed.closed_at, closed.closed_reason = timezone.now(), "done"
    closed.save()
    response = client.post(admin_url(LabellingRound), {"action": "close_now",
                                                       "_selected_action": [open_round.pk, closed.pk]}, follow=True)
    said = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(m.startswith("round 7 closed: its open pairs need no more labels") for m in said), said
    assert any(m.startswith("round 8 closed already") for m in said), said
    assert LabellingRound.objects.get(pk=open_round.pk).closed_at is not None
