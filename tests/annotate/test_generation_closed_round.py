"""A generation job makes no pairs for a labelling round that has closed: no one is given a closed round's pairs (an
import into one is refused the same way), so they would wait for labels for good while counted open."""
from __future__ import annotations

import pytest

from annotate import closing, rounds, services
from generation import services as generation
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, ModelVersion
from jobs.models import ACTIVE

from .factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def version():
    make_prompt()
    return ModelVersion.objects.create(name="v1", path="/nowhere", round=1)


def _closed(number: int):
    round_ = make_round(number=number)
    make_pair(round=round_)
    return closing.close_round(round_, "labelled enough")


def test_a_job_whose_pairs_would_go_into_a_closed_round_is_refused_saying_why(version):
    _closed(2)
    with pytest.raises(generation.GenerationError, match=r"labelling round 2, where pairs sampled from version 'v1' "
                                                         r"go, has closed \(labelled enough\)"):
        generation.start_generation_job(version, n_prompts=1, enqueue=False)
    assert not GenerationJob.objects.exists()
    with pytest.raises(generation.GenerationError, match="has closed"):
        generation._labelling_round(version)  # where a job's pairs are filed
    row = next(r for r in rounds.round_rows() if r.round.number == 2)
    assert row.open_pairs == 0 and services.next_pair_for(make_user()) is None


def test_samples_only_need_no_open_round(version):
    _closed(2)
    config = SamplingConfig(n=2)
    job = generation.start_generation_job(version, n_prompts=1, pairing="none", config=config, enqueue=False)
    assert job.params["pairing"] == "none"


def test_a_job_started_before_its_round_closed_fails_saying_why_and_makes_no_pair(version):
    round_ = generation._labelling_round(version)
    job = generation.start_generation_job(version, n_prompts=1, enqueue=False)
    closing.close_round(round_, "labelled enough")
    with pytest.raises(generation.GenerationError, match="has closed"):
        generation.run_generation_job(job.pk)
    job.refresh_from_db()
    assert job.status not in ACTIVE and "labelling round 2" in job.error and not round_.pairs.exists()


def test_an_open_round_takes_the_jobs_pairs(version):
    round_ = generation._labelling_round(version)
    assert (round_.number, round_.closed_at) == (2, None)
    assert generation.start_generation_job(version, n_prompts=1, enqueue=False).params["pairing"] == "random"
