"""prefloop_client against the live test server: every method a pipeline uses, and errors it can act on."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prefloop_client
from annotate.models import Label
from annotate.services import label_pair
from compare.services import record_vote
from generation.models import ModelVersion
from prefloop_client import APIError, Client
from tests.annotate.factories import make_pair, make_user
from tests.compare.conftest import make_comparison, make_version
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_client_needs_nothing_but_the_standard_library():
    imported = set()
    for path in Path(prefloop_client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "http", "json", "time", "typing", "urllib", "collections", "pathlib", "os",
                        "uuid"}, imported


def test_push_pull_versions_and_promotion(staff_api):
    rows = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(12)]
    assert staff_api.push_preferences(rows, round=1)["created"] == 12
    pulled = staff_api.preferences(page_size=5)
    assert [r["chosen"] for r in pulled] == [r["chosen"] for r in rows]
    staff_api.create_round(2)
    assert staff_api.preferences(round=2) == []  # a round with no decided pair; one no one made is a 404
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    child = ModelVersion.objects.create(name="round-1", path="/y", parent=base, round=1)
    versions = staff_api.versions()
    assert [(v["name"], v["lineage"], v["is_current"]) for v in versions] == [
        ("base", ["base"], True), ("round-1", ["base", "round-1"], False)]
    assert staff_api.promote(child.pk)["is_current"] is True
    assert ModelVersion.objects.get(is_current=True) == child


def test_jobs_are_watched_waited_for_and_cancelled(staff_api):
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)
    seen = []
    with pytest.raises(TimeoutError):
        staff_api.wait("training", run.pk, timeout=0.3, poll=0.1, on_progress=seen.append)
    assert seen and seen[0]["status"] == "queued"
    cancelled = staff_api.cancel("training", run.pk)
    assert staff_api.wait(cancelled)["status"] == "cancelled"
    assert [j["id"] for j in staff_api.jobs("training")] == [run.pk]
    with pytest.raises(ValueError):
        staff_api.job("painting", 1)


def test_a_training_runs_metrics_are_for_staff_as_its_page_is(annotator_api, client, annotator):
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    child = ModelVersion.objects.create(name="round-1", path="/y", parent=base, round=1)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=child,
                                     status=TrainingRun.SUCCEEDED, metrics={"mean_loss": 0.61})
    client.force_login(annotator)
    assert client.get(f"/training/runs/{run.pk}/").status_code == 403
    for path in ("/rounds/1/metrics", f"/training/{run.pk}/metrics"):
        with pytest.raises(APIError) as refused:
            annotator_api.get(path)
        assert refused.value.status == 403, path


def test_round_metrics_and_leaderboard(staff_api):
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    child = ModelVersion.objects.create(name="round-1", path="/y", parent=base, round=1)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=child,
                                     status=TrainingRun.SUCCEEDED, metrics={"mean_loss": 0.61, "note": "x"})
    run.steps.create(step=1, data={"loss": 0.69, "rewards/margins": 0.0})
    run.steps.create(step=2, data={"loss": 0.65, "rewards/margins": 0.1})
    metrics = staff_api.round_metrics(1)
    assert metrics["run"] == run.pk and metrics["summary"] == {"mean_loss": 0.61}
    assert metrics["steps"]["loss"] == [[1.0, 0.69], [2.0, 0.65]]
    with pytest.raises(APIError) as missing:
        staff_api.round_metrics(7)
    assert missing.value.status == 404 and "round 7" in missing.value.detail
    board = staff_api.leaderboard()
    assert board["votes"] == 0 and board["rows"] == []


def test_the_leaderboard_with_votes_is_json(staff_api, annotator):
    base = make_version("base", is_current=True)
    child = make_version("round-1", parent=base)
    for outcome in ["a", "a", "a", "b", "tie"]:  # round-1 wins 3.5 of 5
        record_vote(make_comparison(child, base, tokens=(12, 8)), annotator, outcome)
    board = staff_api.leaderboard()
    assert board["votes"] == 5 and board["anchor"] == "base" and board["unrated"] == []
    rows = {r["version"]: r for r in board["rows"]}
    assert rows["base"]["rating"] == 1000 and rows["round-1"]["rating"] > 1000
    assert rows["round-1"]["votes"] == 5 and rows["round-1"]["mean_tokens"] == 12
    assert rows["round-1"]["answers"] == 5 and rows["round-1"]["truncated_answers"] == 0
    # the length-controlled rating is null with the votes it needs, as the page says "needs N votes"
    assert rows["round-1"]["lc_rating"] is None and board["lc_needs"] > 5
    # the page's win-rate table: 5 votes on 5 pairs of answers, round-1 winning 3.5
    rates = {(w["version"], w["against"]): w for w in board["win_rates"]}
    assert set(rates) == {("round-1", "base"), ("base", "round-1")}
    assert rates["round-1", "base"]["rate"] == pytest.approx(0.7) and rates["base", "round-1"]["rate"] == pytest.approx(0.3)
    assert rates["round-1", "base"]["pairs"] == 5 and rates["round-1", "base"]["votes"] == 5
    assert 0 < rates["round-1", "base"]["low"] < 0.7 < rates["round-1", "base"]["high"] < 1


def test_labelling_with_the_client(annotator_api):
    pair = make_pair()
    label_pair(make_pair().pk, make_user(), "left")  # someone else's, already done
    lease = annotator_api.next_pair()
    assert lease["lease"] and lease["prompt"][0]["role"] == "user"
    assert annotator_api.label(lease["lease"], "right")["side"] == "right"
    assert Label.objects.filter(pair=pair).exists()
    assert annotator_api.next_pair() is None


def test_errors_carry_the_servers_message(live_server):
    with pytest.raises(APIError) as refused:
        Client(live_server.url, "pfl_not-a-token").versions()
    assert refused.value.status == 401 and "not valid" in refused.value.detail
    with pytest.raises(APIError) as wrong:
        Client(live_server.url + "/nothing-here", "pfl_secret").versions()
    assert wrong.value.status == 404 and "without JSON" in wrong.value.detail


def test_no_answer_is_an_api_error_and_wait_polls_again_after_one(staff_api, monkeypatch):
    """A refused connection or a slow poll raised urllib's and socket's own errors, which callers catching APIError
    (as the docs show) missed; and `wait` ended on one slow poll with TimeoutError, which its docs read as "the job is
    still running: cancel it if it should stop", so a pipeline cancelled a healthy run."""
    import socket

    from prefloop_client import APIConnectionError

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(APIError) as refused:
        Client(f"http://127.0.0.1:{port}", "pfl_x", timeout=2).versions()
    assert isinstance(refused.value, APIConnectionError) and refused.value.status == 0
    assert "could not connect" in refused.value.detail
    with socket.socket() as silent:  # accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(APIConnectionError, match=r"no answer within 0.3 s"):
            Client(f"http://127.0.0.1:{silent.getsockname()[1]}", "pfl_x", timeout=0.3).versions()

    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)
    real, calls = staff_api.job, []

    def flaky(kind, job_id):  # the first poll gets no answer, as while the server restarts
        calls.append(kind)
        if len(calls) == 1:
            raise APIConnectionError("GET /jobs/training/1: no answer within 60 s")
        return real(kind, job_id)

    monkeypatch.setattr(staff_api, "job", flaky)
    staff_api.cancel("training", run.pk)
    assert staff_api.wait("training", run.pk, poll=0.05)["status"] == "cancelled" and len(calls) == 2


def test_jobs_are_listed_by_whether_they_are_at_work_and_page_by_id(staff_api):
    """Only the 50 newest, with no filter: a script that lost track of its running jobs could not find them (found
    by an outside review)."""
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    runs = [TrainingRun.objects.create(input_version=base, reference_version=base, status=status)
            for status in ["succeeded"] * 55 + ["running"]]
    newest = staff_api.jobs("training")
    assert [j["id"] for j in newest] == [r.pk for r in reversed(runs)][:50]
    assert [j["id"] for j in staff_api.jobs("training", active=True)] == [runs[-1].pk]
    assert runs[-1].pk not in [j["id"] for j in staff_api.jobs("training", active=False)]
    following = staff_api.jobs("training", before=newest[-1]["id"])
    assert [j["id"] for j in following] == [r.pk for r in reversed(runs)][50:]
    with pytest.raises(APIError) as refused:
        staff_api.get("/jobs", kind="training", active="maybe")
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "active"
