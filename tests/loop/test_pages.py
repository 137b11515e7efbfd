"""The loop page and admin: staff start "run N rounds with judge J" and watch the rounds arrive."""
import pytest

from generation.models import ModelVersion, Prompt
from loop.models import LoopRun


@pytest.fixture
def ready(db):
    ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    Prompt.objects.create(text="train me", split="train")
    Prompt.objects.create(text="eval me", split="eval")


def test_staff_start_a_loop_run_and_watch_it(client, staff, ready):
    client.force_login(staff)
    page = client.get("/loop/")
    assert page.status_code == 200 and "judges.rules:length_target" in page.content.decode()
    assert "judges.llm:for_version?name=base" in page.content.decode()
    response = client.post("/loop/", {"rounds": 3, "pairs": 48, "judge": "judges.rules:length_target", "tag": "",
                                      "eval_limit": 64, "seed": 0})
    run = LoopRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/loop/runs/{run.pk}/"
    assert (run.status, run.rounds, run.pairs, run.judge) == ("queued", 3, 48, "judges.rules:length_target")
    LoopRun.objects.filter(pk=run.pk).update(status="running", stage="train", progress=0.5, done=1, results=[
        {"round": 1, "version": "round-1", "pairs": 48, "labels": 48, "train_loss": 0.61, "reward_accuracy": 0.7,
         "kl_to_base": 3.2, "mean_response_tokens": 55, "base_response_tokens": 90, "win_rate_vs_base": 0.66,
         "ci95": [0.54, 0.76], "seconds": {"generate": 100, "label": 1, "train": 200, "evaluate": 80},
         "warning": "win rate rose +16 points while answers grew +40%"}])
    partial = client.get(f"/loop/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in partial and "round-1" in partial and "0.66" in partial
    assert "answers grew +40%" in partial and "<html" not in partial
    client.post(f"/loop/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == "cancelling"  # the worker stops within seconds and says what it kept
    stopping = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert 'hx-trigger' in stopping and "cancelling" in stopping and ">Cancel</button>" not in stopping
    from jobs import lifecycle

    lifecycle.stopped(run, "1 round kept")
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert 'hx-trigger' not in page and "cancelled after 1 of 3 rounds: 1 round kept" in page


def test_a_second_click_on_start_shows_the_run_the_first_started(client, staff, ready):
    client.force_login(staff)
    form = {"rounds": 2, "pairs": 8, "judge": "judges.rules:length_target", "tag": "", "eval_limit": 64, "seed": 0}
    first = client.post("/loop/", form)
    second = client.post("/loop/", form, follow=True)
    run = LoopRun.objects.get()
    assert first["Location"] == f"/loop/runs/{run.pk}/"
    assert second.redirect_chain == [(f"/loop/runs/{run.pk}/", 302)]
    assert f"loop run {run.pk} with these settings is queued already" in second.content.decode()


def test_a_bad_start_shows_a_message_not_a_traceback(client, staff, db):
    client.force_login(staff)
    response = client.post("/loop/", {"rounds": 1, "pairs": 4, "judge": "judges.rules:length_target", "tag": "",
                                      "eval_limit": 8, "seed": 0}, follow=True)
    assert "no current model version" in response.content.decode() and not LoopRun.objects.exists()


def test_the_admin_starts_runs_through_the_same_service(client, staff, ready):
    client.force_login(staff)
    assert client.get("/admin/loop/looprun/add/").status_code == 200
    response = client.post("/admin/loop/looprun/add/", {"rounds": 2, "pairs": 8, "judge": "judges.rules:prefer_list",
                                                        "tag": "", "eval_limit": 4, "seed": 1})
    run = LoopRun.objects.get()
    assert response["Location"] == f"/loop/runs/{run.pk}/" and run.judge == "judges.rules:prefer_list"
    assert client.get("/admin/loop/looprun/").status_code == 200


def test_annotators_cannot_see_the_loop(client, annotator, db):
    client.force_login(annotator)
    response = client.get("/loop/")  # the refusal page, not the admin login
    assert response.status_code == 403 and "This page is for staff" in response.content.decode()


def test_a_start_the_admin_refused_leaves_no_added_entry_in_its_history(client, staff, ready):
    """The service refused the start (shown as a message), yet the admin's history said "Added loop run None"."""
    from django.contrib.admin.models import LogEntry

    from training.models import TrainingRun

    client.force_login(staff)
    client.post("/admin/loop/looprun/add/", {"rounds": 1000, "pairs": 8, "judge": "judges.rules:prefer_list",
                                             "tag": "", "eval_limit": 4, "seed": 1})
    base = ModelVersion.objects.get(name="base")
    client.post("/admin/training/trainingrun/add/", {"input_version": base.pk, "reference_choice": "start",
                                                     "data_choice": "all", "params": '{"beta": -1}'})
    assert not LoopRun.objects.exists() and not TrainingRun.objects.exists()
    assert not LogEntry.objects.exists()
    client.post("/admin/loop/looprun/add/", {"rounds": 2, "pairs": 8, "judge": "judges.rules:prefer_list",
                                             "tag": "", "eval_limit": 4, "seed": 1})
    assert LogEntry.objects.get().object_id == str(LoopRun.objects.get().pk)  # a start that was made is recorded


def test_the_runs_lists_show_a_lost_round_and_a_running_runs_dashboard(client, staff, ready):
    from training.models import TrainingRun

    client.force_login(staff)
    LoopRun.objects.create(judge="judges.rules:prefer_list", rounds=2, total=2, status="running", results=[
        {"round": 1, "version": "round-1", "win_rate_vs_base": 0.0}])
    assert "<td>0.00</td>" in client.get("/loop/").content.decode()  # a round that lost every vote, not a blank
    run = TrainingRun.objects.create(input_version=ModelVersion.objects.get(name="base"), status="running",
                                     progress=1.0, stage="measuring 'round-1'", total=10, done=10)
    assert f'href="/training/runs/{run.pk}/">Watch</a>' in client.get("/training/").content.decode()
    assert "<td class=\"field-progress_pct\">99%</td>" in client.get("/admin/training/trainingrun/").content.decode()


def test_a_round_with_no_votes_says_its_win_rate_was_not_measured(client, staff, ready):
    """It showed an empty win rate and the interval "[, ]"."""
    run = LoopRun.objects.create(judge="judges.rules:length_target", rounds=1, total=1, status="succeeded", results=[
        {"round": 1, "version": "round-1", "pairs": 4, "labels": 4, "win_rate_vs_base": None, "ci95": None,
         "seconds": {"generate": 1, "label": 1, "train": 1, "evaluate": 1}}])
    client.force_login(staff)
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert "not measured" in page and "[, ]" not in page


def test_the_run_page_says_how_many_eval_prompts_its_rounds_were_evaluated_on(client, staff, ready):
    """The page read "evaluated on 64 eval prompts" (the limit asked) where the eval split held 40: each round's
    evaluation, and its win rate against base, rested on 40."""
    run = LoopRun.objects.create(rounds=2, pairs=8, judge="judges.rules:length_target", eval_limit=64, total=2)
    client.force_login(staff)
    assert "evaluated on up to 64 eval prompts" in client.get(f"/loop/runs/{run.pk}/").content.decode()
    votes = {"n": 40, "b_wins": 24, "a_wins": 12, "ties": 4, "both_bad": 0}
    LoopRun.objects.filter(pk=run.pk).update(results=[{"round": 1, "version": "round-1", "votes": votes}])
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert "evaluated on 40 eval prompts (limit 64)" in page and "evaluated on 64" not in page
    LoopRun.objects.filter(pk=run.pk).update(eval_limit=40)
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert "evaluated on 40 eval prompts" in page and "(limit" not in page
    # a result row without a vote count (edited by hand) is left out of it, never a 500
    LoopRun.objects.filter(pk=run.pk).update(results=[{"round": 1, "votes": {"won": 3}}, {"round": 2, "votes": None},
                                                      "not a row"])
    page = client.get(f"/loop/runs/{run.pk}/")
    assert page.status_code == 200 and "evaluated on up to 40 eval prompts" in page.content.decode()
