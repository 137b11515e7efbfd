"""A Parquet or hf export's bar moves while its Arrow table is built from the rows, and a Cancel is heard then.
Before, the table was built in one call after the pairs were read: the bar stood at READ_SHARE (80%) through it, and
a Cancel waited for its first chunk written."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from django.urls import reverse

from annotate import export_jobs, hf_dataset
from annotate.models import ExportJob
from annotate.services import label_pair
from jobs import lifecycle
from jobs.lifecycle import Tracker

from . import exporting
from .factories import make_pair, make_round, make_user

ROWS = 7


def _decided(n: int) -> None:
    person, round_ = make_user(), make_round(2)
    for i in range(n):  # some with a round, some without: a part's column of nulls takes the others' type
        label_pair(make_pair(text_a=f"good {i}", text_b=f"bad {i}", round=round_ if i > 3 else None).pk, person, "left")


def _recording(monkeypatch) -> list[tuple]:
    """(done, progress, stage) of the job's row after each progress report (every one written, as a page polls)."""
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 2)
    seen, report = [], Tracker.report

    def recording(self, **kwargs):
        written = report(self, **kwargs)
        seen.append(ExportJob.objects.values_list("done", "progress", "stage").get(pk=self.job.pk))
        return written

    monkeypatch.setattr(Tracker, "report", recording)
    return seen


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_the_bar_moves_while_the_table_is_built_before_any_row_is_written(client, staff, monkeypatch, fmt):
    _decided(ROWS)
    seen = _recording(monkeypatch)
    client.force_login(staff)
    job, _ = exporting.export(client, format=fmt)
    assert job.status == "succeeded" and job.done == ROWS
    writing = f"writing {ROWS} rows"
    start = seen.index((0, pytest.approx(export_jobs.READ_SHARE), writing))
    building = [(done, progress, stage) for done, progress, stage in seen[start + 1:] if "building" in stage]
    # a report a part of WRITE_ROWS rows, each further on, none of them with a row written yet
    assert [stage for *_, stage in building] == [f"{writing}: building the Parquet table, {n} of {ROWS} rows"
                                                 for n in (2, 4, 6, 7)]
    progress = [p for _, p, _ in building]
    assert all(done == 0 for done, *_ in building) and progress == sorted(set(progress))
    zipped_from = 1 - export_jobs.ZIP_SHARE if fmt == "hf" else 1.0
    built = export_jobs.READ_SHARE + (zipped_from - export_jobs.READ_SHARE) * export_jobs.BUILD_SHARE
    assert export_jobs.READ_SHARE < progress[0] and progress[-1] == pytest.approx(built)
    # then the rows written, from where the building left the bar
    after = [(done, p) for done, p, stage in seen if stage == writing and done > 0]
    assert [done for done, _ in after] == [2, 4, 6, 7] and all(p > built for _, p in after)
    assert after[-1][1] == pytest.approx(zipped_from)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_a_cancel_while_the_table_is_built_stops_the_job_with_nothing_written_or_kept(
        client, staff, monkeypatch, settings, fmt):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)  # the Cancel is read at the next part of the table
    _decided(ROWS)
    seen = _recording(monkeypatch)
    client.force_login(staff)
    response = exporting.post(client, format=fmt)
    job = ExportJob.objects.get()
    report = Tracker.report  # the recording one

    def cancelling(self, **kwargs):  # the page says the table is being built: the person clicks Cancel
        written = report(self, **kwargs)
        if "building" in (self.job.stage or "") and ExportJob.objects.get(pk=job.pk).status == "running":
            assert "building the Parquet table, 2 of 7 rows" in client.get(response.url).content.decode()
            assert client.post(reverse("annotate:export_cancel", args=[job.pk]),
                               HTTP_HX_REQUEST="true").status_code == 200
        return written

    monkeypatch.setattr(Tracker, "report", cancelling)
    export_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.stage.startswith(f"cancelled after 0 of {ROWS} rows: nothing was kept")
    building = [stage for *_, stage in seen if "building" in stage]
    assert building == [f"writing {ROWS} rows: building the Parquet table, 2 of {ROWS} rows"], "stopped there"
    assert all(done == 0 for done, *_ in seen), "no row was written"
    assert not Path(job.path).parent.exists() and list(Path(settings.EXPORTS_DIR).iterdir()) == []


@pytest.mark.parametrize("chat", [False, True])
def test_a_table_built_in_parts_is_the_table_built_whole(monkeypatch, chat):
    """Typed by every row as from_pylist types them: a part whose rounds are all missing, or whose comments are all
    empty lists, takes the types the other parts give those columns."""
    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 3)

    def text(t):
        return [{"role": "user", "content": t}] if chat else t

    rows = [{"prompt": text(f"q{i}"), "chosen": text("a"), "round": None if i < 3 else i, "preference_prob": 1.0,
             "comments": [] if i < 3 else [f"c{i}"], "annotator_ids": [i]} for i in range(8)]
    told: list[int] = []
    table = hf_dataset.table_of(rows, built=told.append)
    whole = pa.Table.from_pylist(rows)
    assert told == [3, 3, 2] and table.schema == whole.schema and table.equals(whole)
    assert table.schema.field("round").type == pa.int64() and table.to_pylist() == rows
