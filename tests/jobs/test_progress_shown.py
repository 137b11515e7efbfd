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
    assert [TrainingRun(progress=p, status=Status.SUCCEEDED).percent
            for p in (0.0, 0.29, 0.5, 1.0, 1.2, -0.1)] == [0, 29, 50, 100, 100, 0]


def test_a_job_working_past_its_last_counted_unit_reads_99_with_no_estimate():
    """Training reaches its last step, then measures the new version for a while: the bar read 100% and "about 0 s
    left" while the work went on."""
    from datetime import timedelta

    from django.utils import timezone

    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    now = timezone.now()
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status=Status.RUNNING,
                                     progress=1.0, done=250, total=250, stage="measuring 'round-1'",
                                     claimed=now - timedelta(seconds=100), updated=now - timedelta(seconds=5))
    assert run.percent == 99 and run.eta_seconds is None
    html = render_to_string("jobs/_progress.html", {"job": run})
    assert "· 99%" in html and "100%" not in html and "left" not in html and "measuring &#x27;round-1&#x27;" in html
    run.progress, run.updated = 0.5, now - timedelta(seconds=60)  # half in 40 s, and 60 s since: overdue
    assert run.eta_seconds is None  # not "about 0 s left"


def test_a_job_silent_for_minutes_says_so_instead_of_a_frozen_estimate():
    """With its worker gone, a running job showed "about 9 s left" for as long as anyone looked."""
    from datetime import timedelta

    from django.utils import timezone

    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    now = timezone.now()
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status=Status.RUNNING,
                                     progress=0.5, done=5, total=10, claimed=now - timedelta(minutes=20),
                                     updated=now - timedelta(minutes=10))
    html = render_to_string("jobs/_progress.html", {"job": run})
    assert "no word from its worker for 10 min: is its worker running?" in html and "left" not in html
    run.updated = now - timedelta(seconds=20)  # a live job: its estimate, no warning
    html = render_to_string("jobs/_progress.html", {"job": run})
    assert "about" in html and "left" in html and "no progress written" not in html
