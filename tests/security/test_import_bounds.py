"""Rows 8 and 10 of issue 17 for imports. Row 8: a 105 KB Parquet file (a million rows of one repeated string,
zstd) took a gunicorn worker to 3.1 GB. Imports are now bounded in rows, decoded bytes and JSON nesting, each refusal
naming its limit and the setting that raises it, and a Parquet file is read in counted batches, so memory stays near
the limit whatever the file decodes to. Row 10: JSON nested 100,000 deep, a 5,000-digit integer, a lone surrogate,
a NUL byte or a file name over 193 characters gave 500s (the last two on PostgreSQL); now each is a clear refusal
(or, for the name, an import) and nothing is stored half-way."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from annotate.models import Label, Pair
from generation.models import Prompt, Response
from tests.annotate.importing import upload

BOMB_ROWS = 1_000_000
TEXTS = {"prompt": "Tell me a story. " * 60, "chosen": "Once upon a time " * 60, "rejected": "No. " * 250}
BOMB_DECODED = BOMB_ROWS * sum(len(t) for t in TEXTS.values())  # about 3 GB


def _bomb(path: Path, *, arrow_schema: bool = True) -> Path:
    """A million rows of the same three strings, dictionary-encoded and zstd-compressed: a few hundred KB on disk.
    With the Arrow schema stored (pyarrow's default) the columns read back as dictionaries; without it (other
    writers) as plain strings: both are covered."""
    codes = pa.array(np.zeros(BOMB_ROWS, dtype=np.int32))
    table = pa.table({k: pa.DictionaryArray.from_arrays(codes, pa.array([v])) for k, v in TEXTS.items()})
    pq.write_table(table, path, compression="zstd", store_schema=arrow_schema)
    return path


def _nothing_stored() -> bool:
    return not (Prompt.objects.exists() or Response.objects.exists() or Pair.objects.exists() or Label.objects.exists())


def _upload(client, name: str, content: bytes, kind: str = "preferences"):
    """The import job's page once a worker ran it (the job itself as `.job`)."""
    job, page = upload(client, name, content, kind=kind)
    page.job = job
    return page


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.mark.django_db
def test_the_parquet_bomb_is_refused_by_its_row_count_with_the_setting_named(staff_client, tmp_path):
    bomb = _bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 1_000_000 < BOMB_DECODED / 1000  # under a megabyte, three gigabytes decoded
    response = _upload(staff_client, "bomb.parquet", bomb.read_bytes())
    html = response.content.decode()
    assert response.job.status == "failed" and "Nothing was imported" in html
    assert "bomb.parquet: 1,000,000 rows is over the limit of 200,000 rows" in html
    assert "PREFLOOP_IMPORT_MAX_ROWS" in html
    with pytest.raises(CommandError, match="PREFLOOP_IMPORT_MAX_ROWS"):
        call_command("import_preferences", str(bomb))
    assert _nothing_stored()


@pytest.mark.django_db
@pytest.mark.parametrize("arrow_schema", [True, False])
def test_under_the_row_limit_the_decoded_size_is_counted_and_refused(staff_client, tmp_path, settings, arrow_schema):
    settings.PREFLOOP_IMPORT_MAX_ROWS = 2 * BOMB_ROWS
    settings.PREFLOOP_IMPORT_MAX_BYTES = 64 * 2**20
    bomb = _bomb(tmp_path / "bomb.parquet", arrow_schema=arrow_schema)
    html = _upload(staff_client, "bomb.parquet", bomb.read_bytes()).content.decode()
    assert "decoded is over the limit of 67,108,864 bytes" in html and "PREFLOOP_IMPORT_MAX_BYTES" in html
    assert _nothing_stored()


_MEASURE = textwrap.dedent("""
    import resource, sys
    from prefcore.rows import ImportLimits, ImportProblem, read_preferences
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_preferences(sys.argv[1], limits=ImportLimits(max_rows=2_000_000, max_bytes=64 * 2**20))
        print("accepted")
    except ImportProblem as problem:
        print(problem)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
""")


@pytest.mark.parametrize("arrow_schema", [True, False])
def test_reading_the_bomb_grows_memory_by_about_the_limit_not_the_decoded_size(tmp_path, arrow_schema):
    """Peak RSS of a fresh process (prefcore.rows imports no Django), measured after its imports, so only the
    read counts: before, pandas materialised all three gigabytes."""
    bomb = _bomb(tmp_path / "bomb.parquet", arrow_schema=arrow_schema)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(bomb)], capture_output=True, text=True, check=True,
                         cwd=settings.BASE_DIR, timeout=600).stdout.splitlines()
    assert "PREFLOOP_IMPORT_MAX_BYTES" in out[0]
    growth = int(out[-1])
    assert growth < 256 * 2**20, f"peak RSS grew {growth / 2**20:.0f} MiB"  # a 64 MiB limit, a 3 GB bomb
    assert growth < BOMB_DECODED / 10


@pytest.mark.django_db
@pytest.mark.parametrize("content, expected", [
    ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "chosen": "a", "rejected": "b"}\n',
     "line 2: JSON nested more than 32 levels deep (the setting PREFLOOP_IMPORT_MAX_DEPTH raises the limit)"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested more than 32 levels deep"),
    ('[{"prompt": "q", "chosen": "a", "rejected": "b"},\n\n {"prompt": "q2", "chosen": ' + "[" * 40 + "]" * 40
     + ', "rejected": "b"}]', "line 3: JSON nested more than 32 levels deep"),  # a JSON array: its row's line
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "preference_prob": ' + "9" * 5000 + "}\n",
     "line 2: a number of more than 4,300 digits"),
    ('{"prompt": "q \\ud800", "chosen": "a", "rejected": "b"}\n',
     "line 2: field &#x27;prompt&#x27;: contains a lone surrogate (&#x27;\\ud800&#x27;) at position 3: not Unicode text"),
    ('{"prompt": "q", "chosen": "a\\u0000b", "rejected": "b"}\n',
     "line 2: field &#x27;chosen&#x27;: contains a NUL character at position 2"),
    ('{"prompt": [{"role": "user", "content": "hi\\u0000"}], "chosen": "a", "rejected": "b"}\n',
     "contains a NUL character at position 3"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "preference_prob": 1e999}\n',
     "field &#x27;preference_prob&#x27;: expected a number between 0.5 and 1, got inf"),
])
def test_hostile_json_is_refused_with_a_clear_message_and_nothing_stored(staff_client, content, expected):
    # a good row first where the file is JSON Lines: it is not stored either
    ok = '{"prompt": "fine", "chosen": "yes", "rejected": "no"}\n' if content.startswith("{") else ""
    response = _upload(staff_client, "prefs.jsonl", (ok + content).encode())
    html = response.content.decode()
    assert response.job.status == "failed", html[-2000:]
    assert expected in html, html[-3000:]
    assert _nothing_stored()


@pytest.mark.django_db
def test_a_csv_cell_of_deeply_nested_json_is_refused(staff_client):
    cell = '"[{""role"": ""user"", ""content"": ' + "[" * 5000 + "1" + "]" * 5000 + '}]"'
    response = _upload(staff_client, "prefs.csv", f"prompt,chosen,rejected\n{cell},a,b\n".encode())
    assert response.job.status == "failed"
    assert "prefs.csv: line 2: field &#x27;prompt&#x27;: JSON nested too deeply to read" in response.content.decode()
    assert _nothing_stored()


@pytest.mark.django_db
def test_a_file_name_of_300_characters_imports_with_its_source_cut(staff_client):
    name = "p" * 294 + ".jsonl"
    response = _upload(staff_client, name, json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode())
    assert response.job.status == "succeeded" and "1 added" in response.content.decode()
    assert len(response.job.file_name) <= 255
    assert all(len(p.source) <= 200 for p in Prompt.objects.all())
    assert all(len(r.source) <= 200 for r in Response.objects.all())


@pytest.mark.django_db
def test_command_options_that_reach_the_database_are_checked(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "response_a": "a", "response_b": "b"}) + "\n")
    for options, message in [
        ({"round": 2**63}, "expected a round number from 0 to 2,147,483,647"),
        ({"round": -1}, "expected a round number"),
        ({"round": 2**31}, "expected a round number"),
        ({"labels_needed": 0}, "labels needed 0: expected 1 to 1000"),
        ({"labels_needed": 10**30}, "expected 1 to 1000"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("import_pairs", str(pairs), **options)
    with pytest.raises(CommandError, match="expected a round number"):
        call_command("import_preferences", str(pairs), round=2**63)
    with pytest.raises(CommandError, match="tag .*: expected up to 100 printable characters"):
        call_command("import_prompts", str(pairs), tag="t" * 101)
    with pytest.raises(CommandError, match="--tag holds a NUL character"):
        call_command("import_prompts", str(pairs), "--tag=a\x00b")
    with pytest.raises(CommandError, match="--tag holds bytes that are not UTF-8 text"):
        call_command("import_prompts", str(pairs), "--tag=caf\udce9")
    assert _nothing_stored()


_PEAK = """
import sys
from prefcore.rows import ImportLimits, ImportProblem, read_rows
try:
    read_rows(sys.argv[1], "big-values.parquet", ImportLimits(max_bytes=64 * 2**20))
    print("read")
except ImportProblem as exc:
    print(exc.problems[0])
# this process's own peak (ru_maxrss would carry the forking test process's peak across exec)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024)
"""


@pytest.mark.parametrize("nested", [False, True])
def test_rows_pointing_at_one_huge_value_are_refused_before_they_are_decoded(tmp_path, nested):
    """Each batch of 256 rows was decoded before its size was counted: 256 rows pointing at one 16 MiB string (a
    file of a few KB, its metadata saying 16 MB, under the limit) took 4 GiB of memory to refuse, and one value of
    near the limit would take the worker down. The text columns are now read as dictionaries and what decoding
    would make is counted first. Measured in a process of its own (its peak memory is the test)."""
    import subprocess
    import sys

    codes = pa.array(np.zeros(256, dtype=np.int32))  # every row points at value 0: the file holds it once
    chosen = pa.DictionaryArray.from_arrays(codes, pa.array(["x" * (16 * 2**20)], pa.large_string()))
    if nested:  # the same value inside a chat: a list of one {role, content} per row
        role = pa.DictionaryArray.from_arrays(codes, pa.array(["assistant"]))
        chosen = pa.ListArray.from_arrays(pa.array(np.arange(257, dtype=np.int32)),
                                          pa.StructArray.from_arrays([role, chosen], ["role", "content"]))
    table = pa.table({"prompt": pa.array([f"question {i}" for i in range(256)]), "chosen": chosen,
                      "rejected": pa.array(["no"] * 256)})
    path = tmp_path / "big-values.parquet"
    pq.write_table(table, path, compression="zstd")
    assert path.stat().st_size < 10_000 and pq.ParquetFile(path).metadata.row_group(0).total_byte_size < 64 * 2**20
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert "decoded is over the limit of 67,108,864 bytes" in out[0]
    assert int(out[1]) < 1024, f"peak memory {out[1]} MiB reading a file refused at 64 MiB"
