"""Nothing the app writes deletes or overwrites what it did not create (issue 17, rows 5 and 13): exports go to new
paths, and training checkpoints to folders named once, whatever is already on disk and however two runs race."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotate.exporters import ExportError, export_preferences
from annotate.services import record_label
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
    record_label(pair.pk, make_user(), "right")
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
