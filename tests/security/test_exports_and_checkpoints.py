"""Nothing the app writes deletes or overwrites what it did not create (issue 17, rows 5 and 13): exports go to new
paths, and training checkpoints to folders named once, whatever is already on disk and however two runs race."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.exporters import ExportError, export_preferences
from annotate.services import label_pair
from tests.annotate.factories import make_pair, make_user

FORMATS = ["jsonl", "parquet", "hf"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def models_folder(tmp_path) -> Path:
    """What `export_preferences var/models --format hf` used to delete: a folder of someone's files."""
    folder = tmp_path / "models"
    (folder / "smollm2").mkdir(parents=True)
    (folder / "smollm2" / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (folder / "smollm2" / "config.json").write_text('{"model_type": "llama"}')
    (folder / "notes.txt").write_text("keep me")
    return folder


@pytest.fixture
def decided_pair(db):
    pair = make_pair(text_a="alpha", text_b="beta")
    label_pair(pair.pk, make_user(), "right")
    return pair


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", FORMATS)
def test_exporting_to_a_folder_of_files_leaves_every_file_intact(models_folder, decided_pair, fmt, capsys):
    before = snapshot(models_folder)
    call_command("export_preferences", str(models_folder), format=fmt)
    after = snapshot(models_folder)
    # Every file that was there is there, byte for byte; the export is a new name inside the folder.
    assert {k: after[k] for k in before} == before
    new = sorted(set(after) - set(before))
    assert new and all(name.startswith("preferences-") for name in new)
    written = capsys.readouterr().out
    assert f"wrote 1 preference rows to {models_folder / new[0].split('/')[0]}" in written


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_file_is_refused_by_name_and_kept(tmp_path, decided_pair, fmt):
    existing = tmp_path / "train.jsonl"
    existing.write_text('{"mine": true}\n')
    with pytest.raises(CommandError, match=rf"{existing} already exists: an export never overwrites"):
        call_command("export_preferences", str(existing), format=fmt)
    assert existing.read_text() == '{"mine": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]  # no temporary left behind


@pytest.mark.django_db
def test_the_parent_folder_is_never_removed(tmp_path, decided_pair):
    """The reported attack: OUT pointing at `../../` deleted it. Now the export lands inside, a new name."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / "precious.txt").write_text("data")
    before = snapshot(tmp_path)
    export = export_preferences(work / ".." / "..", fmt="hf")
    assert export.path.parent.resolve() == tmp_path.resolve() and export.path.name.startswith("preferences-")
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before


@pytest.mark.django_db
def test_two_exports_into_one_folder_take_two_names(tmp_path, decided_pair):
    first = export_preferences(tmp_path, fmt="jsonl")
    second = export_preferences(tmp_path, fmt="jsonl")
    assert first.path != second.path
    for export in (first, second):
        assert [json.loads(line)["chosen"] for line in export.path.read_text().splitlines()] == ["beta"]


@pytest.mark.django_db
def test_a_new_path_and_an_empty_placeholder_file_are_written(tmp_path, decided_pair):
    fresh = export_preferences(tmp_path / "new" / "prefs.jsonl")
    assert fresh.path == tmp_path / "new" / "prefs.jsonl" and fresh.rows == 1
    placeholder = tmp_path / "download.parquet"
    placeholder.touch()  # what the download view makes with NamedTemporaryFile: empty, its own
    assert export_preferences(placeholder, fmt="parquet").path == placeholder
    assert placeholder.stat().st_size > 0
    with pytest.raises(ExportError):
        export_preferences(placeholder, fmt="parquet")  # no longer empty: kept


# ---- checkpoints: folders named once ---------------------------------------------------------------------------

def fake_checkpoint(folder: Path, marker: str) -> Path:
    """A folder register_version accepts (config.json), with weights that say whose they are."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "owner": marker}))
    (folder / "model.safetensors").write_bytes(marker.encode() * 1000)
    return folder


def finished_run(name: str, tmp_path: Path, models_dir: Path):
    """A training run on its own round-0 version, with its finished checkpoint in a temporary folder."""
    from generation.models import ModelVersion
    from training.models import TrainingRun

    start = ModelVersion.objects.create(name=f"start-{name}", path=str(fake_checkpoint(tmp_path / f"start-{name}", name)))
    run = TrainingRun.objects.create(input_version=start, reference_version=start, status=TrainingRun.RUNNING)
    return run, fake_checkpoint(models_dir / f".tmp-run-{run.pk}-x", f"checkpoint of {name}")


@pytest.mark.django_db(transaction=True)
def test_two_runs_registering_the_same_name_keep_both_checkpoints(tmp_path, settings, monkeypatch):
    """The race of the report: run A has renamed its checkpoint to round-1 and is about to register it when run B
    (which also found round-1 free) registers. B used to rmtree A's folder; then A's insert failed and it removed
    B's. Now B cannot take A's folder, and each version points at its own, intact checkpoint."""
    import threading

    from django.db import connection

    from generation.models import ModelVersion
    from training import services
    from training.dpo.config import DPOConfig

    settings.MODELS_DIR = tmp_path / "models"
    run_a, tmp_a = finished_run("A", tmp_path, settings.MODELS_DIR)
    run_b, tmp_b = finished_run("B", tmp_path, settings.MODELS_DIR)
    a_renamed, b_done = threading.Event(), threading.Event()
    real_register = services.register_version

    def register_after_b(name, path, **kwargs):
        if threading.current_thread().name == "run-A":
            a_renamed.set()
            assert b_done.wait(60), "run B never finished"
        return real_register(name, path, **kwargs)

    monkeypatch.setattr(services, "register_version", register_after_b)
    found = {}

    def register_a():
        try:
            found["a"] = services._register(run_a, DPOConfig(), tmp_a)
        except BaseException as exc:  # reported below
            found["a_error"] = exc
            a_renamed.set()
        finally:
            connection.close()

    thread = threading.Thread(target=register_a, name="run-A")
    thread.start()
    assert a_renamed.wait(60)
    try:
        version_b = services._register(run_b, DPOConfig(), tmp_b)
    finally:
        b_done.set()
        thread.join(60)
    assert "a_error" not in found, found.get("a_error")
    version_a = ModelVersion.objects.get(pk=found["a"].pk)
    assert (version_a.name, version_b.name) == ("round-1", "round-1-2")
    for version, owner in ((version_a, "checkpoint of A"), (version_b, "checkpoint of B")):
        assert (Path(version.path) / "model.safetensors").read_bytes() == owner.encode() * 1000
    assert Path(version_a.path) != Path(version_b.path)


@pytest.mark.django_db
def test_a_name_taken_in_the_database_or_on_disk_is_never_reused(tmp_path, settings):
    """A folder of that name that is not PrefLoop's, and a version registered by hand under the next name, are both
    left alone: the checkpoint goes to the first name free in both places."""
    from generation.models import ModelVersion
    from training import services
    from training.dpo.config import DPOConfig

    settings.MODELS_DIR = tmp_path / "models"
    stray = fake_checkpoint(settings.MODELS_DIR / "round-1", "someone's files")
    by_hand = ModelVersion.objects.create(name="round-1-2", path=str(fake_checkpoint(tmp_path / "elsewhere", "hand")))
    before = snapshot(settings.MODELS_DIR)
    run, tmp = finished_run("C", tmp_path, settings.MODELS_DIR)
    version = services._register(run, DPOConfig(), tmp)
    assert version.name == "round-1-3" and Path(version.path) == settings.MODELS_DIR / "round-1-3"
    after = snapshot(settings.MODELS_DIR)
    assert {k: after[k] for k in before} == before
    assert (stray / "config.json").exists() and Path(by_hand.path, "model.safetensors").read_bytes() == b"hand" * 1000


@pytest.mark.django_db
def test_two_real_rounds_on_one_version_leave_the_first_checkpoint_intact(trainable_base):
    """The whole path: train, register round-1; train again from the same version; the first stays as it was."""
    from generation.models import ModelVersion
    from training import services
    from training.models import TrainingRun

    base = trainable_base
    params = {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32}
    first = services.run_training(services.start_training_run(input_version=base, params=params, enqueue=False).pk)
    assert first.status == TrainingRun.SUCCEEDED, first.error
    first_files = snapshot(Path(first.output_version.path))
    second = services.run_training(services.start_training_run(input_version=base, params=params, enqueue=False).pk)
    assert second.status == TrainingRun.SUCCEEDED, second.error
    assert (first.output_version.name, second.output_version.name) == ("round-1", "round-1-2")
    assert snapshot(Path(ModelVersion.objects.get(name="round-1").path)) == first_files


def test_an_empty_output_path_is_refused_not_the_working_folder(tmp_path, monkeypatch, decided_pair):
    """`export_preferences ""` once wrote into whatever folder the command ran in."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CommandError, match="output path is empty"):
        call_command("export_preferences", "  ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_partial_checkpoints_of_runs_that_ended_are_removed_and_an_active_runs_kept(tmp_path, settings):
    """A lost loop's round ends failed without another attempt, so the folder its killed worker was writing (a whole
    checkpoint, if the kill came while saving) stayed in the models folder for good."""
    from training import services
    from training.models import TrainingRun

    settings.MODELS_DIR = tmp_path / "models"
    ended, ended_tmp = finished_run("ended", tmp_path, settings.MODELS_DIR)
    TrainingRun.objects.filter(pk=ended.pk).update(status=TrainingRun.FAILED)
    busy, busy_tmp = finished_run("busy", tmp_path, settings.MODELS_DIR)  # running on another worker
    mine, mine_tmp = finished_run("mine", tmp_path, settings.MODELS_DIR)
    services._remove_partial_checkpoints(mine.pk)  # as a worker claims run `mine` again
    assert not ended_tmp.exists() and not mine_tmp.exists() and busy_tmp.exists()
