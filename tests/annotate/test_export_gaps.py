"""Exports as their readers meet them: an empty Parquet export still has its columns, files get the mode any new
file gets, the dataset card describes every column, a form without the page's boxes counts judge labels as the
command does, and a refused export still shows the page as it is."""
from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.urls import reverse

from annotate import exporters
from annotate.dataset import decisions
from annotate.exporters import export_preferences, preference_rows
from annotate.hf_dataset import COLUMNS
from annotate.models import AnnotatorProfile, ExportJob
from annotate.services import label_pair

from . import exporting
from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def test_an_empty_parquet_export_has_the_columns_of_a_full_one(tmp_path):
    empty = export_preferences(tmp_path / "empty.parquet", fmt="parquet")
    assert empty.rows == 0
    schema = pq.read_schema(empty.path)
    label_pair(make_pair(round=make_round(number=1)).pk, make_user(), "left", comment="clearer")
    full = pq.read_schema(export_preferences(tmp_path / "full.parquet", fmt="parquet").path)
    assert schema.names == full.names
    assert [str(t) for t in schema.types] == [str(t) for t in full.types]


def test_every_exported_column_is_in_the_empty_schema_and_described_on_the_card():
    label_pair(make_pair().pk, make_user(), "left")
    (row,) = preference_rows(decisions(same_answers=False))
    assert list(row) == exporters.TEXT_ROW_SCHEMA.names
    assert set(COLUMNS) == set(row) and all(COLUMNS.values())


def test_the_hf_card_says_what_every_column_means(tmp_path):
    label_pair(make_pair().pk, make_user(), "left", comment="why")
    call_command("export_preferences", str(tmp_path / "hf"), format="hf", stdout=io.StringIO())
    card = (tmp_path / "hf" / "README.md").read_text()
    described = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.*) \|$", card, re.M))
    assert set(described) >= {"truncated", "chosen_truncated", "rejected_truncated", "comments"}
    assert all(meaning.strip() for meaning in described.values()), described


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_exports_get_the_mode_a_new_file_or_folder_gets(tmp_path, umask):
    label_pair(make_pair().pk, make_user(), "left")
    old = os.umask(umask)
    try:
        made = {fmt: export_preferences(tmp_path / f"out-{fmt}", fmt=fmt).path for fmt in ("jsonl", "parquet", "hf")}
        inside = export_preferences(tmp_path, fmt="jsonl").path  # a new name inside a folder
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE(path.stat().st_mode) for name, path in [*made.items(), ("inside", inside)]}
    assert modes == {"jsonl": 0o666 & ~umask, "parquet": 0o666 & ~umask, "hf": 0o777 & ~umask,
                     "inside": 0o666 & ~umask}


def _rows(client, **fields) -> list[dict]:
    job, response = exporting.export(client, **fields)
    assert job is not None, response.content.decode()[-2000:]
    return [json.loads(line) for line in exporting.content(response).decode().splitlines()]


def test_a_form_without_the_box_counts_judge_labels_and_the_page_box_still_decides(client, staff):
    judge = make_user("judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True)
    label_pair(make_pair().pk, judge, "left")
    client.force_login(staff)
    url = reverse("annotate:export")
    # a script's form without the page's boxes: as export_preferences does
    assert len(_rows(client, format="jsonl", boxes_shown=None, include_automatic=None)) == 1

    page = client.get(url).content.decode()
    assert re.search(r'<input type="checkbox" name="include_automatic"[^>]*checked', page)
    assert '<input type="hidden" name="boxes_shown" value="1">' in page
    # what the page sends: the box ticked, or left unticked (sent as nothing) beside the hidden input
    assert len(_rows(client, format="jsonl", include_automatic="on")) == 1
    assert _rows(client, format="jsonl", include_automatic=None) == []
    assert _rows(client, format="jsonl", boxes_shown=None, include_automatic="false") == []


def test_a_page_shown_again_keeps_the_box_as_it_was(client, staff):
    make_round(number=2)
    client.force_login(staff)
    url = reverse("annotate:export")
    # an old download link (GET) shows the form filled in, its errors named, and starts nothing
    from_link = client.get(url, {"round": 99, "download": "1"})
    assert from_link.status_code == 400 and "Round: no labelling round 99" in from_link.content.decode()
    assert re.search(r'<input type="checkbox" name="include_automatic"[^>]*checked', from_link.content.decode())
    unticked = exporting.post(client, round=99, include_automatic=None).content.decode()
    assert re.search(r'<input type="checkbox" name="include_automatic"', unticked)
    assert not re.search(r'<input type="checkbox" name="include_automatic"[^>]*checked', unticked)
    assert not ExportJob.objects.exists()


def test_the_hf_refusal_says_why_and_the_page_still_counts_the_stored_labels(client, staff):
    client.force_login(staff)
    refused = exporting.post(client, format="hf")  # nothing labelled: refused before any job is started
    page = refused.content.decode()
    assert refused.status_code == 400 and "No decided pairs to export" in page and not ExportJob.objects.exists()
    label_pair(make_pair().pk, make_user(), "tie")  # a label, and no decided pair: the job finds none, and says so
    assert "Stored labels: 1 by people, 0 by judges." in client.get(reverse("annotate:export")).content.decode()
    job, page = exporting.export(client, format="hf")
    assert job.status == "failed" and "No decided pairs to export with these filters" in page.content.decode()
    assert not (Path(job.path).parent).exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_an_export_says_what_it_reads_and_writes_and_one_asked_to_stop_leaves_nothing(tmp_path, monkeypatch, fmt):
    """An export job's progress and Cancel (annotate.export_jobs): the pairs it will read, the rows it writes a chunk
    at a time, and a stop heard between chunks, with no part of the export left behind."""
    from annotate import hf_dataset

    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 2)
    person = make_user()
    for _ in range(5):
        label_pair(make_pair().pk, person, "left")
    told: dict[str, list[int]] = {"counted": [], "read": [], "writing": [], "written": []}
    hooks = exporters.ExportHooks(**{name: told[name].append for name in told},
                                  should_stop=lambda: sum(told["written"]) >= 2)
    out = tmp_path / "out" / f"prefs.{fmt}"
    with pytest.raises(exporters.ExportStopped):
        export_preferences(out, fmt=fmt, hooks=hooks)
    assert (told["counted"], sum(told["read"]), told["writing"], told["written"]) == ([5], 5, [5], [2])
    assert list((tmp_path / "out").iterdir()) == []
    whole = export_preferences(out, fmt=fmt, hooks=exporters.ExportHooks(written=told["written"].append))
    assert whole.rows == 5 and told["written"][1:] == [2, 2, 1]


def test_the_export_commands_bar_shows_pairs_read_of_a_total(tmp_path, capsys):
    """It counted pairs with no total ("2row [00:00, ...]"): nobody could tell how much of an export was left."""
    user = make_user()
    for _ in range(3):
        label_pair(make_pair().pk, user, "left")
    label_pair(make_pair().pk, user, "tie")  # read too, and counted in the total, though it writes no row
    out = io.StringIO()
    call_command("export_preferences", str(tmp_path / "out.jsonl"), stdout=out)
    assert "0/4 [" in capsys.readouterr().err  # the bar starts at 0 of the 4 pairs it reads
    assert out.getvalue().startswith("wrote 3 preference rows")
