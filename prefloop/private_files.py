"""Files only their owner may read: the development secret key and the SQLite database (with its -wal and -shm).

settings.py calls these before Django opens anything. A file is created 0600 from the start (never created readable
and narrowed later, which would leave a moment for another user to open it), and one left readable by an earlier
version is narrowed to 0600 when this process owns it. SQLite gives the -wal and -shm files the database's own mode.
This module imports no Django: settings.py uses it while Django is still being configured.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE = 0o600


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) with the last folder 0700 when it is new; an existing folder is left as is
    (an operator may share it with a group on purpose)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def make_private(path: Path) -> None:
    """Narrow an existing file of ours to 0600 (others' files, and files already private, are left alone)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.getuid():
        path.chmod(PRIVATE)


def create_private(path: Path, data: str = "") -> bool:
    """Create `path` 0600 holding `data`, whole or not at all; False (nothing written) when it already exists.

    The data goes to a private temporary file first, linked to the name only when complete: a second process
    starting at the same moment reads the whole file or finds none, never an empty one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)  # never replaces an existing file
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: claim the name directly
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
        return True
    finally:
        os.unlink(tmp)


def private_sqlite(path: Path) -> None:
    """The database file exists 0600 before SQLite opens it (an empty file is an empty database), and the files
    an earlier version left readable are narrowed."""
    if path.parent.is_dir():
        create_private(path)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        make_private(name)
