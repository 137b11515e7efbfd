"""The review findings of a2f71cf, each performed: the loop's KL measured before its gate, a version that is a
candidate from its registration and measured without held-out pairs after a lost worker, a second undo at the same
moment, and the client paging by number against a server without `next_after`."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.db.models.signals import pre_delete

from annotate import services
from annotate.models import Assignment, Label, Pair
from annotate.services import next_pair_for, record_label
from generation import services as gen
from generation.models import ModelVersion, Prompt, VersionChange
from jobs import lifecycle
from prefloop_client import Client
from tests.annotate.factories import make_pair, make_round, make_user
from tests.threads import run_at_once
from tests.training.test_heldout import FAST_TRAINING, SAMPLING, _labelled_round
from training import promotion
from training import services as train
from training.dataset import is_heldout
from training.models import TrainingRun


class WorkerLost(BaseException):
    """The worker's process ending where it is raised (a kill, an out-of-memory end): nothing of the run's own code
    runs after it, so the run is left as that moment left it."""


@pytest.fixture
def tiny_base(db, tiny_model_dir, settings, tmp_path) -> ModelVersion:
    settings.MODELS_DIR = tmp_path / "models"
    return gen.register_version("base", tiny_model_dir)


def _lost_while_measuring(monkeypatch, run: TrainingRun) -> TrainingRun:
    """Run the training; its worker is lost as it starts measuring the version it registered."""

    def lost(*args, **kwargs):
        raise WorkerLost

    with monkeypatch.context() as patch:
        patch.setattr(train, "evaluate_round", lost)
        with pytest.raises(WorkerLost):
            train.run_training(run.pk)
    run.refresh_from_db()
    assert run.status == "running" and run.output_version is not None  # registered, then lost
    return run


# ---- 1. the loop measures KL before its gate ---------------------------------------------------------------------

def test_a_cancel_while_the_loop_measures_kl_promotes_nothing_of_the_round_it_discards(tiny_base, settings,
                                                                                        monkeypatch):
    """The gate ran first and promoted the round's version, then a cancel while the KL to base was measured
    discarded the round: the run kept no round, yet its version had become the current one."""
    import loop.services as loop_services
    from loop.models import LoopRun
    from loop.services import run_loop, start_loop_run
    from tests.loop.test_run_loop import JUDGE, PARAMS, _open_gate

    for k in range(8):
        Prompt.objects.create(text=f"Train question {k}: name {k} fruits.", split="train", tag="t")
    for k in range(3):
        Prompt.objects.create(text=f"Eval question {k}: name a colour.", split="eval")
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 3
    _open_gate(settings)  # the round's version passes the gate whenever it is checked
    run = start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS, enqueue=False,
                         preset="all")
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    real = loop_services.mean_kl

    def pressed(*args, **kwargs):  # a person presses Cancel as the loop starts measuring the KL to base
        lifecycle.cancel(LoopRun.objects.get(pk=run.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_services, "mean_kl", pressed)
    run = run_loop(run.pk)
    assert run.status == "cancelled" and run.results == [], run.stage
    training = TrainingRun.objects.get(part_of=run.key)
    assert training.output_version.name == "round-1"
    assert gen.current_version() == tiny_base and not training.output_version.is_current
    assert not VersionChange.objects.exists()
    assert training.decision == "candidate" and not training.gate  # the gate was never checked
    assert "it stays a candidate, not promoted" in run.stage and "'round-1'" in run.stage


# ---- 2. a registered version is a candidate; measured again without held-out pairs -----------------------------

def test_a_version_whose_worker_was_lost_while_measuring_it_awaits_the_gate(tiny_base, staff, settings,
                                                                           monkeypatch):
    """The run recorded its decision ("candidate") only at its end: lost while measuring, its version had none, and
    a rollback made it current without the gate and without a reason."""
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    _labelled_round(tiny_base, staff, 12, split_eval=2)
    run = _lost_while_measuring(monkeypatch, train.start_training_run(params=FAST_TRAINING, enqueue=False))
    version = run.output_version
    assert run.decision == "candidate"
    # lost once too often: the next claim ends it failed, its version registered and never measured
    TrainingRun.objects.filter(pk=run.pk).update(attempts=TrainingRun.max_attempts)
    assert lifecycle.claim(TrainingRun, run.pk) is None
    run.refresh_from_db()
    assert run.status == "failed" and run.decision == "candidate"
    row = next(r for r in promotion.version_table() if r["version"] == version)
    assert not row["can_roll_back"]
    with pytest.raises(promotion.PromotionError, match="awaiting the promotion gate"):
        promotion.rollback(version, user=staff)
    assert gen.current_version() == tiny_base and not VersionChange.objects.exists()


def test_a_version_measured_after_a_lost_worker_is_not_scored_on_pairs_it_trained_on(tiny_base, staff, settings,
                                                                                     monkeypatch):
    """Lost while measuring, then more labels: the next attempt measured the version on the held-out pairs of the
    labels as they were then, and those held out prompts the version had trained on."""
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    settings.PREFLOOP_HELDOUT_FRACTION = 0.5
    first = _labelled_round(tiny_base, staff, 12, split_eval=2)
    settings.PREFLOOP_HELDOUT_MIN_PAIRS = first + 1  # too few pairs to hold any out: the run trains on all of them
    run = _lost_while_measuring(monkeypatch, train.start_training_run(params=FAST_TRAINING, enqueue=False))
    assert "nothing held out of this round" in run.log and run.metrics["pairs"] == first
    trained = set(Pair.objects.values_list("prompt_id", flat=True))

    # One label more than the minimum and more: the round now holds pairs out, some of them of prompts it trained on.
    for i in range(12):
        Prompt.objects.create(text=f"later question {i}: name a tree number {i}.", split="train")
    gen.run_generation_job(gen.start_generation_job(tiny_base, n_prompts=12, config=SAMPLING, enqueue=False).pk)
    while (assignment := next_pair_for(staff)) is not None:
        record_label(assignment, staff, "left", seconds=1.0)
    assert Pair.objects.count() > first + 1
    assert any(is_heldout(pid, 0.5) for pid in trained), "no prompt it trained on is held out now: no case to test"

    again = train.run_training(run.pk)
    assert again.status == "succeeded", again.error
    assert again.output_version == run.output_version and again.metrics["pairs"] == first
    assert not any(k.startswith("heldout/") for k in again.metrics), again.metrics
    assert "sampled/answers" in again.metrics  # its answers and KL are measured
    assert "held-out pairs are not measured again" in again.log


# ---- 3. a second undo at the same moment undoes nothing ----------------------------------------------------------

def _labelled_by_two():
    """A pair that needs two labels, labelled by someone else and then by `person` (whose undo is tested)."""
    pair = make_pair(round=make_round(), labels_needed=2)
    other, person = make_user(), make_user()
    services.label_pair(pair.pk, other, "right")
    services.label_pair(pair.pk, person, "left")
    pair.refresh_from_db()
    assert pair.labels_done == 2
    return pair, person


def test_a_second_undo_while_the_first_takes_the_label_back_undoes_nothing(db):
    """"u" pressed twice at once: both undos found the same label; the one that came second deleted nothing, yet it
    took a label off the pair's count again (and leased the pair back again). Performed on any database: the
    second undo runs inside the first, between its finding the label and deleting it."""
    pair, person = _labelled_by_two()
    answers, inside = [], []

    def second_undo(sender, instance, **kwargs):  # the first undo is deleting its label: "u" again, now
        if not inside:
            inside.append(instance.pk)
            answers.append(services.undo_last_label(person))

    pre_delete.connect(second_undo, sender=Label, weak=False)
    try:
        first = services.undo_last_label(person)
    finally:
        pre_delete.disconnect(second_undo, sender=Label)
    assert inside and answers[0] is not None and answers[0].pair_id == pair.pk  # the second took the label back
    assert first is None  # the first found it gone: nothing to undo
    pair.refresh_from_db()
    assert list(Label.objects.values_list("side", flat=True)) == ["right"]  # the other person's label stays
    assert pair.labels_done == 1 and pair.labels_needed == 2
    assert Assignment.objects.get(pair=pair, annotator=person).state == Assignment.LEASED


@pytest.fixture
def postgresql(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite lets one writer in at a time (the test above interleaves the undos)")


def _two_undos_at_once(person, **named) -> dict:
    """Two of one person's undos at once, each in its own transaction: the first held just before its delete while
    the second reads the label. Their answers, by name ("first", "second")."""
    holding, answers = threading.Event(), {}

    def held(sender, instance, **kwargs):  # the first undo, about to delete: the second reads the label meanwhile
        if threading.current_thread().name == "first" and not holding.is_set():
            holding.set()
            time.sleep(1.5)

    def first() -> None:
        answers["first"] = services.undo_last_label(person, **named)

    def second() -> None:
        holding.wait(60)
        answers["second"] = services.undo_last_label(person, **named)

    pre_delete.connect(held, sender=Label, weak=False)
    try:
        errors = run_at_once({"first": first, "second": second}, release=holding)
    finally:
        pre_delete.disconnect(held, sender=Label)
    assert errors == []
    return answers


def test_two_undos_at_the_same_moment_take_one_label_back(postgresql):
    """Two requests of one person's "u" at once, each in its own transaction: both read the label, the second
    waits on the round the first holds, then found its label deleted and took a label off the count again."""
    pair, person = _labelled_by_two()
    answers = _two_undos_at_once(person)
    assert answers["first"] is not None and answers["first"].pair_id == pair.pk
    assert answers["second"] is None
    pair.refresh_from_db()
    assert list(Label.objects.values_list("side", flat=True)) == ["right"]
    assert pair.labels_done == 1 and pair.labels_needed == 2


def test_two_undos_of_one_named_lease_at_the_same_moment_both_answer_it(postgresql):
    """The API's undo names its lease so a retry answers as the first did: two sent at once (a retry overlapping a
    slow first), the second found the label gone and answered "nothing to undo" (409)."""
    pair, person = _labelled_by_two()
    lease = Assignment.objects.get(pair=pair, annotator=person).pk
    answers = _two_undos_at_once(person, lease=lease)
    assert answers["first"].pk == answers["second"].pk == lease
    assert list(Label.objects.values_list("side", flat=True)) == ["right"]


# ---- 4. the client pages by number against a server without next_after -------------------------------------------

ROWS = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]


class _ServerBeforeAfter(BaseHTTPRequestHandler):
    """/api/v1/preferences as a server from before `after` answers: pages by number, no next_after (and `after`,
    a parameter it does not know, ignored)."""

    asked: list[dict] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.asked.append(query)
        page, size = int(query.get("page", 1)), int(query.get("page_size", 100))
        start = (page - 1) * size
        more = start + size < len(ROWS)
        body = json.dumps({"count": len(ROWS), "page": page, "page_size": size, "next_page": page + 1 if more else None,
                           "results": ROWS[start:start + size]}).encode()
        self.send_response(200 if url.path == "/api/v1/preferences" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server_before_after():
    _ServerBeforeAfter.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ServerBeforeAfter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_pulls_every_page_from_a_server_without_next_after(server_before_after):
    """The client paged only by `after`: a server that does not answer next_after ended the pull after its first
    page, and a pipeline got two rows of five, saying nothing."""
    pulled = Client(server_before_after, "token").preferences(page_size=2)
    assert pulled == ROWS
    assert [q.get("page") for q in _ServerBeforeAfter.asked] == ["1", "2", "3"]
    assert not any("after" in q for q in _ServerBeforeAfter.asked)
