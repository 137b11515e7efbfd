"""A checkpoint that cannot be written (the models folder is full): the run fails with a clear error, no version is
registered and nothing half-written stays on disk. The full disk is real: a 64 KiB tmpfs mounted as the models
folder."""
from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def full_models_dir(tmp_path, settings):
    mount = tmp_path / "models"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    settings.MODELS_DIR = mount
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.django_db
def test_full_disk_during_checkpoint_write(full_models_dir, tiny_model_dir, annotator):
    from generation.models import ModelVersion
    from tests.labelled import labelled_pairs
    from training import services
    from training.models import TrainingRun

    base = ModelVersion.objects.create(name="tiny-base", path=str(tiny_model_dir), is_current=True)
    labelled_pairs(base, annotator, 4)
    run = services.start_training_run(input_version=base, params={"epochs": 1, "batch_size": 2, "max_length": 64,
                                                                  "max_prompt_length": 32}, enqueue=False)
    run = services.run_training(run.pk)

    assert run.status == TrainingRun.FAILED
    assert "No space left on device" in run.error, run.error
    assert run.output_version is None
    assert list(ModelVersion.objects.values_list("name", flat=True)) == ["tiny-base"]
    assert ModelVersion.objects.get(is_current=True) == base
    assert list(full_models_dir.iterdir()) == [], "half-written files left in the models folder"
