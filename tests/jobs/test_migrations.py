"""The migrations that made the four job kinds one Job keep every row's status, counts, log and error."""
from __future__ import annotations

import pytest

from tests.migrating import models_as_of

BEFORE = [("generation", "0002_response_sampling_key"), ("training", "0004_referencelogp_dtype"),
          ("compare", "0002_compare_jobs"), ("loop", "0001_initial")]


@pytest.mark.slow
def test_jobs_made_before_keep_their_data(transactional_db):
    with models_as_of(BEFORE) as old:
        versions = old.get_model("generation", "ModelVersion")
        v, w = versions.objects.create(name="b", path="/x"), versions.objects.create(name="c", path="/x")
        old.get_model("generation", "GenerationJob").objects.create(version=v, status="running", done=3, total=8,
                                                                    log="hi")
        old.get_model("training", "TrainingRun").objects.create(input_version=v, status="succeeded", step=40,
                                                                total_steps=60, progress=0.66, attempts=1)
        old.get_model("compare", "CompareJob").objects.create(version_a=v, version_b=w, status="failed", done=2,
                                                              total=8, error="boom")
        old.get_model("loop", "LoopRun").objects.create(judge="j", rounds=3, status="running", progress=0.4,
                                                        stage="train", results=[{"round": 1}])
    from compare.models import CompareJob
    from generation.models import GenerationJob
    from loop.models import LoopRun
    from training.models import TrainingRun

    g, t, c, run = (m.objects.get() for m in (GenerationJob, TrainingRun, CompareJob, LoopRun))
    assert (g.status, g.done, g.total, g.progress, g.log) == ("running", 3, 8, 3 / 8, "hi")
    assert (t.status, t.done, t.total, t.progress, t.attempts) == ("succeeded", 40, 60, 0.66, 1)
    assert (c.status, c.done, c.total, c.progress, c.error) == ("failed", 2, 8, 0.25, "boom")
    assert (run.status, run.done, run.total, run.progress, run.stage) == ("running", 1, 3, 0.4, "train")
