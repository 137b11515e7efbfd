"""The Train page's estimated duration: measured on this installation's finished runs of the same base model and
dtype (trainer time per pair and epoch, plus what a run spends around its loop), or honestly absent."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from generation import services as gen
from generation.models import ModelVersion
from training import services as train
from training.models import TrainingRun

from .test_heldout import _labelled_round


@pytest.fixture
def tiny_base(db, tiny_model_dir) -> ModelVersion:
    return gen.register_version("base", tiny_model_dir)


def _finished(version, *, pairs: int, epochs: int, trainer_s: float, wall_s: float, dtype: str = "float32",
              status: str = TrainingRun.SUCCEEDED, ago_s: float = 0) -> TrainingRun:
    end = timezone.now() - timedelta(seconds=ago_s)
    return TrainingRun.objects.create(
        input_version=version, reference_version=version, status=status, pairs=pairs,
        params={"epochs": epochs, "dtype": dtype}, metrics={"seconds": trainer_s, "pairs": pairs},
        started=end - timedelta(seconds=wall_s), finished=end)


def test_the_estimate_is_the_median_rate_of_the_latest_matching_runs(tiny_base):
    other_base = ModelVersion.objects.create(name="other", path=tiny_base.path)
    # 0.5, 1.0 and 2.0 s per pair and epoch, each with 10 s around the loop: median 1.0 s and 10 s
    _finished(tiny_base, pairs=20, epochs=1, trainer_s=10, wall_s=20, ago_s=30)
    _finished(tiny_base, pairs=10, epochs=2, trainer_s=20, wall_s=30, ago_s=20)
    _finished(tiny_base, pairs=10, epochs=1, trainer_s=20, wall_s=30, ago_s=10)
    # Not measured on: another dtype, another base model, a failed run
    _finished(tiny_base, pairs=10, epochs=1, trainer_s=1000, wall_s=2000, dtype="bfloat16")
    _finished(other_base, pairs=10, epochs=1, trainer_s=1000, wall_s=2000)
    _finished(tiny_base, pairs=10, epochs=1, trainer_s=1000, wall_s=2000, status=TrainingRun.FAILED)

    found = train.estimated_duration(tiny_base, 30, epochs=2, dtype="float32")
    assert (found["runs"], found["seconds_per_pair"], found["overhead_seconds"]) == (3, 1.0, 10.0)
    assert found["seconds"] == pytest.approx(10 + 1.0 * 30 * 2)
    assert train.estimated_duration(tiny_base, 30, epochs=2, dtype="bfloat16")["seconds"] == pytest.approx(
        1000 + 100 * 30 * 2)
    child = ModelVersion.objects.create(name="round-1", path=tiny_base.path, parent=tiny_base, round=1)
    assert train.estimated_duration(child, 30, epochs=2, dtype="float32")["runs"] == 3, "same base, same rate"


def test_no_estimate_before_a_run_has_finished(tiny_base):
    assert train.estimated_duration(tiny_base, 30, dtype="float32") is None


def test_the_train_page_shows_the_estimate_and_what_it_rests_on(tiny_base, staff, client, settings):
    settings.PREFLOOP_DTYPE = "float32"
    _labelled_round(tiny_base, staff, 6)
    client.force_login(staff)
    page = client.get("/training/").content.decode()
    assert "no estimate yet: the first finished run on this base model in this dtype measures the rate" in page
    _finished(tiny_base, pairs=10, epochs=1, trainer_s=600, wall_s=660)  # 60 s a pair, 60 s around the loop
    page = client.get("/training/").content.decode()
    cell = re.search(r'<tr data-choice="all">.*?<td class="num pairs">(\d+)</td>.*?<td class="num estimate">(.*?)</td>',
                     page, re.S)
    pairs, epochs = int(cell.group(1)), train.DPOConfig().epochs
    minutes = round((60 + 60 * pairs * epochs) / 60)
    assert cell.group(2).startswith(f"about {minutes} min")
    assert "measured on the last 1 finished run of this base model" in cell.group(2)
