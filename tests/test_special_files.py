"""An import is given a pipe or a device instead of a file: refused at once, naming the path, never read.

The size check read st_size, which is 0 for a FIFO or a device: a FIFO named x.jsonl made every import_* command
wait forever for a writer, and a link to /dev/zero read until memory ran out. Each import here runs where a
regression fails the test instead of hanging it: in a thread given a few seconds (the FIFO is then opened for
writing and closed, so the blocked reader sees its end), or in a child process with a memory limit and a timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from prefcore.rows import ImportProblem, read_rows

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 10

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX thing")


def _in_thread(fn, fifo: Path | None = None):
    """What fn() raised or returned, or a test failure when it is still running after WAIT_S seconds."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (handed back to the test to look at)
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():
        if fifo is not None:  # a writer that closes at once: the blocked reader reads an empty file and ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(WAIT_S)
        pytest.fail(f"still reading {fifo or 'the file'} after {WAIT_S} s: a special file was opened, not refused")
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, suffix):
    fifo = tmp_path / f"x{suffix}"
    os.mkfifo(fifo)
    out = _in_thread(lambda: read_rows(fifo), fifo)
    error = out.get("error")
    assert isinstance(error, ImportProblem), out
    assert str(error).startswith(f"x{suffix}: {fifo} is a named pipe (FIFO), not a regular file")


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["import_prompts", "import_pairs", "import_preferences"])
def test_every_import_command_refuses_a_fifo_in_one_line(tmp_path, command):
    fifo = tmp_path / "x.jsonl"
    os.mkfifo(fifo)
    out = _in_thread(lambda: call_command(command, str(fifo)), fifo)
    error = out.get("error")
    assert isinstance(error, CommandError), out
    assert f"x.jsonl: {fifo} is a named pipe (FIFO), not a regular file" in str(error)
    assert "\n" not in str(error)


def test_a_link_to_a_device_is_refused_naming_the_link_and_the_device(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    link = tmp_path / "zero.jsonl"
    link.symlink_to("/dev/zero")
    # in a child with 1 GiB of address space and a timeout: unfixed, it read /dev/zero until memory ran out
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        sys.path.insert(0, {str(ROOT)!r})
        from prefcore.rows import ImportProblem, read_rows
        try:
            read_rows({str(link)!r})
        except ImportProblem as exc:
            print(json.dumps(exc.problems))
        """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("still reading /dev/zero after 60 s: the link was followed and read, not refused")
    assert done.returncode == 0, done.stderr[-2000:]
    (problem,) = json.loads(done.stdout)
    assert problem.startswith(f"zero.jsonl: {link} (a link to /dev/zero) is a character device, not a regular file")


def test_a_link_to_a_regular_file_is_read_as_that_file(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text('{"prompt": "hi"}\n')
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert read_rows(link) == [(1, {"prompt": "hi"})]


def test_a_folder_named_like_a_file_is_refused_naming_it(tmp_path):
    folder = tmp_path / "rows.jsonl"
    folder.mkdir()
    with pytest.raises(ImportProblem, match=r"rows\.jsonl: .* is a folder, not a regular file"):
        read_rows(folder)


def test_a_data_set_folder_is_refused_naming_its_parquet_files(tmp_path):
    """An hf export's folder (found by an outside probe: it was "unknown file type '(none)'")."""
    folder = tmp_path / "export"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"")
    with pytest.raises(ImportProblem) as caught:
        read_rows(folder)
    assert caught.value.problems == [
        f"export: {folder} is a folder, not a file: an import reads one .jsonl, .csv or .parquet file (this data set "
        "folder holds its rows in Parquet files: import each, e.g. data/train-00000-of-00001.parquet)"]
