"""An import job's bar moves while its file is read and checked (seconds for a large file, before any row is
written), and a Cancel is heard then: the job ends with nothing stored. Before, the bar stood at 0 and the stage
said only "reading and checking" until the writing began, and a Cancel waited for the first chunk."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from annotate import import_jobs, importers
from annotate.importers import ImportProblem, ImportStopped, import_pairs
from annotate.models import ImportJob, Pair
from generation.models import Prompt
from jobs import lifecycle
from tests.annotate.importing import queue

pytestmark = pytest.mark.django_db

ROWS = 300  # more than prefcore.rows.WATCH_STEPS: a pass is told in steps, not row by row


def _questions(n: int) -> list[dict]:
    return [{"prompt": f"question {i}"} for i in range(n)]


def _file(fmt: str, rows: list[dict]) -> tuple[str, bytes]:
    if fmt == "jsonl":
        return "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "json array":
        return "p.json", ("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n").encode()
    if fmt == "csv":
        return "p.csv", ("prompt\n" + "".join(f"{r['prompt']}\n" for r in rows)).encode()
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return "p.parquet", out.getvalue()


def _recording(monkeypatch, job: ImportJob) -> list[tuple]:
    """(progress, stage, whether a chunk had begun) of the job's row after each progress report, as its page reads
    it (every report written), and "write" where a chunk's writing begins."""
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)
    seen: list = []
    report, prompts_by_hash = lifecycle.Tracker.report, importers._prompts_by_hash

    def recorded(self, **kwargs):
        written = report(self, **kwargs)
        seen.append(ImportJob.objects.values_list("progress", "stage").get(pk=job.pk))
        return written

    def writing(*args, **kwargs):
        seen.append("write")
        return prompts_by_hash(*args, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", recorded)
    monkeypatch.setattr(importers, "_prompts_by_hash", writing)
    return seen


@pytest.mark.parametrize("fmt", ["jsonl", "json array", "csv", "parquet"])
def test_the_bar_moves_while_the_file_is_read_and_checked(client, staff, monkeypatch, fmt):
    client.force_login(staff)
    job, url = queue(client, *_file(fmt, _questions(ROWS)))
    seen = _recording(monkeypatch, job)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded" and Prompt.objects.count() == ROWS
    before = seen[:seen.index("write")]
    reading = [(progress, stage) for progress, stage in before if stage.startswith("reading and checking")]
    read = [progress for progress, stage in reading if stage.endswith(("lines read", "rows read"))]
    checked = [progress for progress, stage in reading if stage.endswith("rows checked")]
    # many reports of each pass (a Parquet file is read in batches of 256 rows: one each), each further on than the
    # one before, all before a row is written
    assert len(read) >= (2 if fmt == "parquet" else 20) and len(checked) > 20, reading[:5]
    progress = [p for p, _ in reading]
    assert progress == sorted(progress) and len(set(progress)) > 20 and progress[0] < progress[-1]
    assert 0 < read[-1] <= checked[0] and checked[-1] == pytest.approx(import_jobs.READ_SHARE)
    assert reading[-1][1].endswith(f"{ROWS:,} of {ROWS:,} rows checked")
    # then the writing, from where the reading left the bar (it never goes back)
    assert before[-1] == (pytest.approx(import_jobs.READ_SHARE), f"writing {ROWS:,} checked rows")
    after = [progress for progress, _ in (s for s in seen[seen.index("write"):] if s != "write")]
    assert after == sorted(after) and after[0] >= import_jobs.READ_SHARE


def test_a_cancel_while_the_file_is_checked_stops_the_job_with_nothing_written(client, staff, monkeypatch):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)  # the Cancel is read at the reader's next step
    client.force_login(staff)
    job, url = queue(client, *_file("jsonl", _questions(ROWS)))
    seen = _recording(monkeypatch, job)
    cancel = reverse("annotate:import_cancel", args=[job.pk])
    report = lifecycle.Tracker.report

    def cancelling(self, **kwargs):  # the person clicks Cancel once the page says rows are being checked
        written = report(self, **kwargs)
        if "rows checked" in self.job.stage and ImportJob.objects.get(pk=job.pk).status == "running":
            assert client.post(cancel, HTTP_HX_REQUEST="true").status_code == 200
        return written

    monkeypatch.setattr(lifecycle.Tracker, "report", cancelling)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and "write" not in seen and not Prompt.objects.exists()
    assert "rows checked" in job.stage and job.stage.endswith(
        "nothing was stored; importing the file again reads it from the start")
    assert (job.done, job.added) == (0, 0) and not Path(job.path).exists()


def test_an_import_asked_to_stop_while_reading_stores_nothing_and_says_so(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response_a": "a", "response_b": "b"}) + "\n"
                            for i in range(ROWS)))
    told: list[tuple[int, int, str]] = []
    with pytest.raises(ImportStopped) as stopped:
        import_pairs(path, on_reading=lambda *step: told.append(step), should_stop=lambda: len(told) == 10)
    assert stopped.value.reading and str(stopped.value).endswith("nothing was stored")
    assert [what for *_, what in told] == ["lines read"] * 10
    assert not Pair.objects.exists() and not Prompt.objects.exists()
    assert import_pairs(path).created == ROWS  # read again from the start, it stores every row


def test_a_bad_row_is_still_named_by_its_line_and_field_with_the_reading_watched(tmp_path):
    rows = [{"prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(ROWS)]
    rows[200]["response_b"] = 7
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    told: list[tuple[int, int, str]] = []
    with pytest.raises(ImportProblem) as problem:
        import_pairs(path, on_reading=lambda *step: told.append(step), should_stop=lambda: False)
    assert problem.value.problems[0].startswith("pairs.jsonl: line 201: field 'response_b'")
    assert told and not Pair.objects.exists() and not Prompt.objects.exists()


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"], ids=["cr", "crlf", "lf"])
def test_a_csv_files_lines_are_counted_as_csv_reads_them(tmp_path, ending):
    """A lone "\\r" ends a line for csv (a classic Mac file, or a cell's own): counted by "\\n" alone, such a file was
    "1 of 1 lines read" from its first row on, and the watch was told at every row. Each pass is told in steps,
    each further on than the one before, never past its total."""
    from prefcore import rows as formats

    path = tmp_path / "p.csv"
    cells = ['"first\rsecond"' if i % 2 else f"q{i}" for i in range(ROWS)]  # a cell of two lines, every other row
    path.write_bytes(("prompt" + ending + ending.join(cells) + ending).encode())
    told: list[tuple[int, int, str]] = []
    assert len(formats.read_prompts(path, watch=formats.Watch(lambda *step: told.append(step)))) == ROWS
    read = [(done, total) for done, total, what in told if what == formats.LINES_READ]
    total = read[0][1]
    assert total == 1 + ROWS + ROWS // 2 + 1  # the header, a line a row and one more a two-line cell, the end
    assert [done for done, _ in read] == sorted({done for done, _ in read}) and read[-1][0] <= total
    assert {t for _, t in read} == {total} and len(read) <= formats.WATCH_STEPS + 1


def test_an_import_cancelled_between_chunks_ends_its_bar_at_the_rows_it_stored(client, staff, monkeypatch):
    """A chunk's report is written at most once a second, and two chunks of 500 rows take less: an import stopped
    after 1,000 of 1,200 rows, all stored, ended with its bar where the reading had left it (3%)."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)  # every chunk's report held back
    client.force_login(staff)
    job, url = queue(client, *_file("jsonl", _questions(1200)))
    report = lifecycle.Tracker.report

    def cancelling(self, **kwargs):  # Cancel pressed on its page once two chunks are stored
        written = report(self, **kwargs)
        if kwargs.get("done") == 2 * importers.CHUNK_ROWS:
            lifecycle.cancel(ImportJob.objects.get(pk=job.pk))
        return written

    monkeypatch.setattr(lifecycle.Tracker, "report", cancelling)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.stage.startswith("cancelled after 1000 of 1200 rows: 1000 added")
    assert Prompt.objects.count() == job.done == 1000
    assert job.progress == pytest.approx(import_jobs.READ_SHARE + (1 - import_jobs.READ_SHARE) * 1000 / 1200)


@pytest.mark.parametrize("lost", [KeyboardInterrupt, RuntimeError])
def test_an_import_stopped_inside_a_chunk_ends_its_bar_at_the_chunks_committed(client, staff, monkeypatch, lost):
    """A chunk's report is made inside its transaction: one held back by the throttle, of a chunk then rolled back
    (Ctrl-C inside it, its commit failing), was written as the import stopped, the bar at 100% with 1,000 of 1,500
    rows stored."""
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)  # every chunk's report held back
    client.force_login(staff)
    job, url = queue(client, *_file("jsonl", _questions(1500)))
    report = lifecycle.Tracker.report

    def rolled_back(self, **kwargs):  # the third chunk, reported, then lost before it commits
        written = report(self, **kwargs)
        if kwargs.get("done") == 3 * importers.CHUNK_ROWS:
            raise lost("the chunk's commit")
        return written

    monkeypatch.setattr(lifecycle.Tracker, "report", rolled_back)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert Prompt.objects.count() == job.done == 1000 and job.added == 1000, (job.status, job.stage)
    assert job.progress == pytest.approx(import_jobs.READ_SHARE + (1 - import_jobs.READ_SHARE) * 1000 / 1500)
