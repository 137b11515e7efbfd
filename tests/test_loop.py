"""The whole loop: generate pairs → label them → train a round → the new version answers beside the old one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from annotate.models import Label, Pair
from annotate.services import next_pair_for, record_label
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion, Prompt, Response
from tests.broker import publish_with
from training import services as train
from training.dataset import is_heldout
from training.models import ReferenceLogp, TrainingRun

FAST_TRAINING = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "max_prompt_length": 64,
                 "warmup_ratio": 0.0}
SAMPLING = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=0)


def _prompts(n: int, split: str = "train") -> list[Prompt]:
    return [Prompt.objects.create(text=f"{split} question number {i}: what is {i} plus {i}?", split=split)
            for i in range(n)]


def _label_everything(user) -> int:
    labelled = 0
    while (assignment := next_pair_for(user)) is not None:
        record_label(assignment, user, "left" if labelled % 3 else "right", seconds=1.0)
        labelled += 1
    return labelled


@pytest.fixture
def tiny_base(db, tiny_model_dir) -> ModelVersion:
    return gen.register_version("base", tiny_model_dir)


def test_one_iteration_of_the_loop(tiny_base, staff, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    _prompts(6)
    eval_prompts = _prompts(3, "eval")

    job = gen.start_generation_job(tiny_base, n_prompts=6, config=SAMPLING, enqueue=False)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded" and job.done == 6
    responses = Response.objects.filter(job=job)
    assert responses.count() == 12
    assert all(r.logp_sum is not None and r.logp_sum < 0 and r.token_count > 0 for r in responses)
    assert Pair.objects.filter(job=job).count() == job.pairs_made > 0

    labelled = _label_everything(staff)
    assert labelled == job.pairs_made == Label.objects.count()

    run = train.start_training_run(params=FAST_TRAINING, enqueue=False)
    assert run.reference_version == tiny_base
    run = train.run_training(run.pk)
    assert run.status == "succeeded", run.error
    new = run.output_version
    # A finished round registers a candidate; the current version stays until the promotion gate lets it in.
    assert new.parent == tiny_base and new.round == 1 and not new.is_current and run.decision == "candidate"
    assert gen.current_version() == tiny_base
    assert (Path(new.path) / "model.safetensors").exists()
    assert not list(settings.MODELS_DIR.glob(".tmp-*")), "a temporary checkpoint folder was left behind"
    assert run.metrics["pairs"] == labelled and run.steps.count() == run.total_steps > 0
    # Reference log-probs are cached per response for the next round.
    assert ReferenceLogp.objects.filter(reference=tiny_base).count() == 2 * labelled

    answers_base = gen.answers_for(tiny_base, eval_prompts, SAMPLING, seed=7)
    answers_new = gen.answers_for(new, eval_prompts, SAMPLING, seed=7)
    assert set(answers_base) == set(answers_new) == {p.pk for p in eval_prompts}
    assert all(answers_new[p].version == new for p in answers_new)
    # Asking again reuses the stored answers instead of sampling again.
    again = gen.answers_for(new, eval_prompts, SAMPLING, seed=7)
    assert {p: r.pk for p, r in again.items()} == {p: r.pk for p, r in answers_new.items()}


def test_second_round_reuses_cached_reference_logps(tiny_base, staff, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    _prompts(4)
    gen.run_generation_job(gen.start_generation_job(tiny_base, n_prompts=4, config=SAMPLING, enqueue=False).pk)
    _label_everything(staff)
    first = train.run_training(train.start_training_run(params=FAST_TRAINING, enqueue=False).pk)
    cached = {r.response_id: r.logp for r in ReferenceLogp.objects.all()}
    created = {r.response_id: r.created for r in ReferenceLogp.objects.all()}

    from training.dataset import round_pairs

    pairs, _ = round_pairs(reference=tiny_base, max_length=FAST_TRAINING["max_length"])
    assert all(p.ref_chosen_logp is not None and p.ref_rejected_logp is not None for p in pairs)
    second = train.run_training(train.start_training_run(input_version=first.output_version,
                                                         params=FAST_TRAINING, enqueue=False).pk)
    assert second.status == "succeeded", second.error
    assert second.reference_version == tiny_base  # the base stays the reference by default
    assert {r.response_id: r.logp for r in ReferenceLogp.objects.all()} == cached
    assert {r.response_id: r.created for r in ReferenceLogp.objects.all()} == created


def test_new_labels_only_trains_on_the_starting_versions_pairs(tiny_base, staff, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    _prompts(8)
    gen.run_generation_job(gen.start_generation_job(tiny_base, n_prompts=4, config=SAMPLING, enqueue=False).pk)
    first_labels = _label_everything(staff)
    first = train.run_training(train.start_training_run(params=FAST_TRAINING, enqueue=False).pk)
    assert first.status == "succeeded", first.error
    # The new version has sampled nothing yet: "new" has nothing to train on and says which round it looked at.
    empty = train.run_training(train.start_training_run(input_version=first.output_version, data_choice="new",
                                                        params=FAST_TRAINING, enqueue=False).pk)
    assert empty.status == "failed" and "labelling round 2" in empty.error
    job = gen.run_generation_job(gen.start_generation_job(first.output_version, n_prompts=4, config=SAMPLING,
                                                          enqueue=False).pk)
    second_labels = _label_everything(staff)
    assert job.pairs_made == second_labels > 0
    new_only = train.run_training(train.start_training_run(input_version=first.output_version, data_choice="new",
                                                           params=FAST_TRAINING, enqueue=False).pk)
    assert new_only.status == "succeeded", new_only.error
    assert new_only.data_choice == "new" and new_only.pairs == second_labels
    everything = train.start_training_run(input_version=new_only.output_version, params=FAST_TRAINING, enqueue=False)
    everything = train.run_training(everything.pk)
    assert everything.pairs == first_labels + second_labels
    # "replay": the starting version's pairs and as many earlier ones (a cost that does not grow with the rounds)
    replay = train.run_training(train.start_training_run(input_version=first.output_version, data_choice="replay",
                                                         params=FAST_TRAINING, enqueue=False).pk)
    assert replay.status == "succeeded", replay.error
    # (never a held-out prompt's: which prompts those are follows from their ids, so count them)
    replayable = sum(not is_heldout(pair.prompt_id, settings.PREFLOOP_HELDOUT_FRACTION)
                     for pair in Pair.objects.filter(round__number=1))
    assert replay.pairs == second_labels + min(replayable, second_labels)


def test_a_second_round_cannot_start_on_the_same_input_while_one_is_queued(tiny_base):
    train.start_training_run(enqueue=False)
    with pytest.raises(train.TrainingError, match="already queued or running"):
        train.start_training_run(enqueue=False)


def test_training_without_labels_fails_with_a_clear_error(tiny_base, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    run = train.run_training(train.start_training_run(enqueue=False).pk)
    assert run.status == "failed" and "label some pairs first" in run.error
    assert ModelVersion.objects.count() == 1


def test_generation_job_resumes_without_duplicates(tiny_base):
    prompts = _prompts(5)
    job = gen.start_generation_job(tiny_base, n_prompts=5, config=SAMPLING, enqueue=False)
    # A crash after the first prompt: its responses are stored, the job is still "running".
    first = Prompt.objects.get(pk=job.params["prompt_ids"][0])
    backend = gen.backend_for(tiny_base)
    samples = backend.generate([first.as_input], SAMPLING, seeds=[gen.prompt_seed(0, first.pk)])
    gen._store_samples(job, [first], [gen.prompt_seed(0, first.pk)], samples, SAMPLING, gen._labelling_round(tiny_base))
    job.status = "running"
    job.save()
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded" and job.done == len(prompts)
    assert Response.objects.filter(job=job).count() == 2 * len(prompts)
    assert Response.objects.filter(job=job, prompt=first).count() == 2


def test_generate_pairs_and_train_round_commands(tiny_base, staff, settings, tmp_path, capsys):
    settings.MODELS_DIR = tmp_path / "models"
    _prompts(4)
    call_command("generate_pairs", prompts=4, samples=2, max_new_tokens=8)
    assert Pair.objects.count() > 0
    _label_everything(staff)
    call_command("train_round", params=json.dumps(FAST_TRAINING))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["version"] == "round-1" and summary["pairs"] == Label.objects.count()


@pytest.mark.slow
def test_training_round_runs_in_a_real_celery_worker(transactional_db, tiny_model_dir, staff, tmp_path, settings):
    """The task path: queue from the service, a separate `celery worker` process runs it, the page sees it."""
    from django.db import connection

    base = gen.register_version("base", tiny_model_dir)
    _prompts(4)
    gen.run_generation_job(gen.start_generation_job(base, n_prompts=4, config=SAMPLING, enqueue=False).pk)
    _label_everything(staff)

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        database_url = f"sqlite:///{db['NAME']}"
    else:  # the worker must use the test database, not the one DATABASE_URL names
        database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    data_dir = tmp_path / "worker-data"
    env = dict(os.environ, DATABASE_URL=database_url, PREFLOOP_DATA_DIR=str(data_dir),
               DJANGO_SETTINGS_MODULE="prefloop.settings")
    # The test process must publish to the worker's broker folder.
    from prefloop.celery import app

    saved_options = dict(app.conf.broker_transport_options or {})
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        queue = data_dir / "broker" / "queue"
        queue.mkdir(parents=True)
        (data_dir / "broker" / "processed").mkdir()
        publish_with(app, dict(saved_options, data_folder_in=str(queue), data_folder_out=str(queue)))
    else:  # the worker reads the queues CELERY_BROKER_URL names, not the test run's own keys (tests.conftest)
        publish_with(app, {k: v for k, v in saved_options.items() if k != "global_keyprefix"})
    settings.MODELS_DIR = data_dir / "models"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "prefloop", "worker", "-Q", "default,gpu", "--pool", "solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        env=env, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection()
        run = train.start_training_run(params=FAST_TRAINING)  # enqueued on commit (autocommit here)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.status in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        assert run.status == TrainingRun.SUCCEEDED, run.error or f"still {run.status} after 240 s"
        assert run.decision == "candidate" and run.output_version.round == 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        publish_with(app, saved_options)
