"""A job's shown percentage is rounded down: a running job never reads 100%."""
import pytest
from django.template.loader import render_to_string

from generation.models import ModelVersion
from jobs.models import Status
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_a_running_job_at_99_6_percent_shows_99_and_a_finished_one_100():
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status=Status.RUNNING,
                                     progress=0.996, done=249, total=250)
    assert run.percent == 99
    html = render_to_string("jobs/_progress.html", {"job": run, "row": "training-run"})
    assert "· 99%" in html and "100%" not in html
    assert [TrainingRun(progress=p).percent for p in (0.0, 0.29, 0.5, 1.0, 1.2, -0.1)] == [0, 29, 50, 100, 100, 0]
