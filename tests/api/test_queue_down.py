"""A job started while the task queue (the broker) is down: a 503 saying so, as docs/api.md promises, and the job
ended failed with the reason. It answered 500 and left the job queued for ever: no worker would run it, and a
training round started again was refused as "already queued or running"."""
from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError

from compare.models import CompareJob
from generation import services as generation_services
from generation.models import GenerationJob, Prompt
from jobs import lifecycle
from loop.models import LoopRun
from training import services as training_services
from training.models import TrainingRun

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)
TASKS = {GenerationJob: "generation.tasks.run_generation_job", TrainingRun: "training.tasks.run_training",
         CompareJob: "compare.tasks.answer_compare_job", LoopRun: "loop.tasks.run_loop_task"}


class Queue:
    """The broker as the starts see it: down (sending raises what kombu raises for a refused connection), or up
    (the job ids sent are kept, and nothing is left in the broker folder for a later worker)."""

    def __init__(self):
        self.down, self.sent = True, []

    def send(self, args, *more, **options):
        if self.down:
            raise OperationalError("[Errno 111] Connection refused")
        self.sent.append(args[0])


@pytest.fixture
def queue(monkeypatch):
    queue = Queue()
    for name in TASKS.values():
        monkeypatch.setattr(lifecycle.task_named(name), "apply_async", queue.send)
    return queue


@pytest.fixture
def versions(db, tiny_model_dir):
    base = generation_services.register_version("base", tiny_model_dir)
    other = generation_services.register_version("round-1", tiny_model_dir, parent=base, make_current=False)
    for k in range(3):
        Prompt.objects.create(text=f"Train question {k}?", split=Prompt.TRAIN)
        Prompt.objects.create(text=f"Eval question {k}?", split=Prompt.EVAL)
    return base, other


STARTS = {  # kind: (the job's model, its start's body given the two versions)
    "generation": (GenerationJob, lambda base, other: {"n_prompts": 1}),
    "training": (TrainingRun, lambda base, other: {"params": {"beta": 0.1}}),
    "compare": (CompareJob, lambda base, other: {"version_a": base.pk, "version_b": other.pk, "limit": 1}),
    "loop": (LoopRun, lambda base, other: {"rounds": 1, "pairs": 1, "judge": "judges.rules:length_target",
                                           "eval_limit": 1}),
}


@pytest.mark.parametrize("kind", STARTS)
def test_a_start_with_the_task_queue_down_is_a_503_and_the_same_start_works_once_it_is_back(
        live_server, staff, token_for, versions, queue, kind):
    model, body = STARTS[kind]
    url, auth = f"{live_server.url}/api/v1/jobs/{kind}", {"Authorization": f"Bearer {token_for(staff)}"}
    got = http("POST", url, body(*versions), headers=auth)
    assert got.status == 503, f"POST /jobs/{kind} with the queue down answered {got.status}: {got.body}"
    assert "the task queue could not be reached" in got.body["detail"], got.body
    job = model.objects.get()
    assert job.status == "failed", f"{kind} job {job.pk} left {job.status} though its task was never sent"
    assert "the task queue could not be reached (OperationalError)" in job.error and job.finished is not None
    queue.down = False  # the broker is back: the same request starts the job (a training round was refused)
    again = http("POST", url, body(*versions), headers=auth)
    assert again.status == 201, f"POST /jobs/{kind} again answered {again.status}: {again.body}"
    assert queue.sent == [again.body["id"]] and again.body["status"] == "queued"


def test_the_service_every_start_page_calls_ends_the_job_and_raises_what_a_page_can_show(versions, queue):
    """The Train page calls the same service (and every start page its own, through the same enqueue): it got a
    bare OperationalError and a run left queued. It gets a message for a person; the run is ended failed."""
    with pytest.raises(OperationalError) as down:
        training_services.start_training_run(params={"beta": 0.1})
    assert str(down.value).startswith("the task queue could not be reached, so training run ")
    assert "try again in a moment" in str(down.value)
    assert TrainingRun.objects.get().status == "failed"
    queue.down = False
    run = training_services.start_training_run(params={"beta": 0.1})
    assert queue.sent == [run.pk] and run.status == "queued"


def test_a_task_that_cannot_be_sent_for_another_reason_still_ends_its_job(versions, monkeypatch):
    """Not the queue's fault (a message the broker cannot take, say): raised as it is, but no job is left queued
    for a task that never left."""
    def refuse(*args, **options):
        raise TypeError("Object of type set is not JSON serializable")

    monkeypatch.setattr(lifecycle.task_named(TASKS[TrainingRun]), "apply_async", refuse)
    with pytest.raises(TypeError):
        training_services.start_training_run(params={"beta": 0.1})
    run = TrainingRun.objects.get()
    assert run.status == "failed" and run.error.startswith("its task could not be sent (TypeError)")


def test_an_import_with_the_queue_down_says_to_upload_its_file_again(db, settings, tmp_path, staff, monkeypatch):
    """Its record said "start it again", but nothing starts an import but its upload, which is not kept."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotate import import_jobs
    from annotate.models import ImportJob

    queue = Queue()
    monkeypatch.setattr(lifecycle.task_named(ImportJob.task_name), "apply_async", queue.send)
    settings.IMPORTS_DIR = tmp_path / "imports"
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "Hello?"}\n')
    with pytest.raises(OperationalError):
        import_jobs.start(upload, kind="prompts", options={"split": "train", "tag": "", "format": "auto",
                                                           "round": None}, user=staff)
    job = ImportJob.objects.get()
    assert job.status == "failed" and job.error.endswith("upload the file again"), job.error
    assert not any((tmp_path / "imports").iterdir())  # the upload is not kept


@pytest.mark.parametrize("command, args, model", [
    ("generate_pairs", ["--queue", "--prompts", "1"], GenerationJob),
    ("train_round", ["--queue"], TrainingRun),
])
def test_a_command_that_queues_its_job_with_the_queue_down_says_so_in_one_line(versions, queue, command, args, model):
    """`generate_pairs --queue` and `train_round --queue` ended in kombu's traceback (an outside probe): a
    CommandError now, the service's message for a person, and the job ended failed, as the pages and the API do."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=rf"^{command}: the task queue could not be reached, so .* was not started"):
        call_command(command, *args)
    assert model.objects.get().status == "failed"
