"""Write the decided pairs as a preference data set in TRL's format: JSONL, Parquet, or a Hugging Face data set
folder (Parquet shards and a dataset card that `datasets.load_dataset` reads: annotate/hf_dataset.py).

Rows are prompt / chosen / rejected, conversational (message lists) when any prompt is a chat, with the preference
probability, the annotators' ids and the label times. An export always goes to a new path: it never overwrites or
deletes a file or folder it did not create.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from . import hf_dataset
from .dataset import Decision, decisions
from .hf_dataset import DEFAULT_LICENSE, table_of, write_hf_folder, write_parquet

EXPORT_FORMATS = ("jsonl", "parquet", "hf")

# The columns of a row in text form (preference_rows), for a Parquet export with no rows: its readers still find
# TRL's columns, typed as Arrow types rows of values give them.
TEXT_ROW_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
    ("preference_prob", pa.float64()), ("vote_share", pa.float64()), ("pair_id", pa.int64()), ("round", pa.int64()),
    ("gold", pa.bool_()), ("annotator_ids", pa.list_(pa.int64())), ("judge_labels", pa.int64()),
    ("labelled_at", pa.list_(pa.string())), ("truncated", pa.bool_()), ("chosen_truncated", pa.bool_()),
    ("rejected_truncated", pa.bool_()), ("comments", pa.list_(pa.string())),
])


def is_conversational(decided: list[Decision]) -> bool:
    """Whether rows of these pairs are message lists: when any prompt is a chat (one shape for every row: TRL and
    `datasets` refuse a mix)."""
    return any(d.pair.prompt.messages for d in decided)


def preference_rows(decided: list[Decision], conversational: bool | None = None) -> list[dict]:
    """One TRL row per decided pair: message lists when `conversational` (by default, is_conversational)."""
    if conversational is None:
        conversational = is_conversational(decided)
    rows = []
    for d in decided:
        prompt = d.pair.prompt
        if conversational:
            row = {
                "prompt": prompt.chat,
                "chosen": [{"role": "assistant", "content": d.chosen.text}],
                "rejected": [{"role": "assistant", "content": d.rejected.text}],
            }
        else:
            row = {"prompt": prompt.text, "chosen": d.chosen.text, "rejected": d.rejected.text}
        row.update(
            preference_prob=d.preference_prob,
            vote_share=d.vote_share,
            pair_id=d.pair.pk,
            round=d.pair.round.number if d.pair.round else None,
            gold=d.pair.is_gold,
            annotator_ids=[label.annotator_id for label in d.labels],
            judge_labels=sum(label.is_automatic for label in d.labels),  # of those, labels by judges
            labelled_at=[label.created.isoformat() for label in d.labels],
            # Answers stopped at the token limit (they may end mid-sentence): either side, and which.
            truncated=d.chosen.truncated or d.rejected.truncated,
            chosen_truncated=d.chosen.truncated,
            rejected_truncated=d.rejected.truncated,
            comments=[label.comment for label in d.labels if label.comment],
        )
        rows.append(row)
    return rows


class ExportError(Exception):
    """An export that would overwrite something: names the path and what to do instead."""


class ExportStopped(Exception):
    """The export was asked to stop (`should_stop`): nothing of it is left at the path it was going to."""


@dataclass(frozen=True)
class Export:
    rows: int
    path: Path  # where the rows went: the path asked for, or a new name inside the folder asked for


@dataclass(frozen=True)
class ExportHooks:
    """What an export tells the job running it, and asks it: each optional. `counted(n)`: the pairs it will read;
    `read(n)`: n more read; `writing(n)`: the rows it will write, once read; `built(n)`: n more made into the
    Arrow table a Parquet or hf export writes (all of them before the first is written); `written(n)`: n more
    written; `should_stop()`: asked between pairs read, parts of the table built and chunks written."""

    counted: Callable[[int], None] | None = None
    read: Callable[[int], None] | None = None
    writing: Callable[[int], None] | None = None
    written: Callable[[int], None] | None = None
    built: Callable[[int], None] | None = None
    should_stop: Callable[[], bool] | None = None

    def stop_if_asked(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ExportStopped("the export was asked to stop")


def write_rows(rows: list[dict], out: Path | str, fmt: str = "jsonl", *, license: str = DEFAULT_LICENSE,
               written: Callable[[int], None] | None = None, built: Callable[[int], None] | None = None) -> Path:
    """Write the rows to a new path and return it; nothing that was there before is overwritten or deleted.
    `built(n)` is told of each n rows made into the Arrow table of a Parquet or hf export, then `written(n)` of
    each n rows written (hf_dataset.WRITE_ROWS at a time); an exception either raises stops the export, and nothing
    of it is left.

    `out` may be a path that does not exist yet (or an empty file: it holds nothing to lose), or an existing folder,
    in which case the export goes inside it under a new name (preferences-<UTC time>.<format>). Anything else is an
    ExportError. The data is written to a temporary file or folder beside the target and renamed onto a name this
    call claimed first, so a reader never sees half an export and two exports never take the same name.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "hf" and not rows:
        raise ExportError("no decided pairs to export with these filters: a Hugging Face data set needs at least one "
                          "row (`datasets` cannot load an empty one)")
    if not str(out).strip():
        raise ExportError("the output path is empty: name a new file, or a folder to write a new export inside")
    out = Path(out)
    if not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
    target = _claim_target(out, fmt)
    try:
        if fmt == "hf":
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
            try:
                write_hf_folder(rows, tmp, license=license, written=written, built=built)
                _same_mode(tmp, target)
                os.rename(tmp, target)  # onto the empty folder claimed above
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder
                raise
            return target
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            if fmt == "jsonl":
                with open(tmp_name, "w", encoding="utf-8") as fh:
                    step = hf_dataset.WRITE_ROWS
                    for start in range(0, len(rows), step):
                        part = rows[start:start + step]
                        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in part)
                        if written is not None:
                            written(len(part))
            else:  # Arrow types from the values: a data frame made a round column with a missing round a float
                write_parquet(table_of(rows, built=built) if rows else TEXT_ROW_SCHEMA.empty_table(), tmp_name,
                              written=written)
            _same_mode(Path(tmp_name), target)
            os.replace(tmp_name, target)  # onto the empty file claimed above
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target
    except BaseException:
        _release(target, fmt)
        raise


def _claim_target(out: Path, fmt: str) -> Path:
    """Create the (empty) file or folder the export will replace, so no other writer can take the name."""
    if out.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = "" if fmt == "hf" else f".{fmt}"
        for n in range(1, 1000):
            candidate = out / f"preferences-{stamp}{'' if n == 1 else f'-{n}'}{suffix}"
            try:
                _create(candidate, fmt)
            except FileExistsError:
                continue
            return candidate
        raise ExportError(f"{out}: no free name for a new export inside it")
    try:
        _create(out, fmt)
    except FileExistsError:
        if fmt != "hf" and out.is_file() and not out.is_symlink() and out.stat().st_size == 0:
            return out  # an empty file, such as a temporary file made for this export: nothing to lose
        raise ExportError(
            f"{out} already exists: an export never overwrites a file or folder. Choose a new name, "
            "or name a folder to write a new export inside it."
        ) from None
    return out


def _create(path: Path, fmt: str) -> None:
    """Create the empty file or folder with the mode any new one gets (0o666 or 0o777 less the umask)."""
    if fmt == "hf":
        path.mkdir()
    else:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _same_mode(tmp: Path, target: Path) -> None:
    """Give the temporary file or folder the mode of the name it replaces: tempfile makes them 0o600 and 0o700,
    readable by their owner alone, where an export is a file like any other. The claimed name has the mode a new one
    gets under the umask; reading the umask itself means setting it, for every thread of the process at once."""
    os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))


def _release(target: Path, fmt: str) -> None:
    """Give back a claimed name the export could not fill (only while it is still the empty placeholder)."""
    try:
        if fmt == "hf":
            target.rmdir()  # fails, leaving it, unless empty
        elif target.is_file() and target.stat().st_size == 0:
            target.unlink()
    except OSError:
        pass


def export_preferences(
    out: Path | str,
    *,
    fmt: str = "jsonl",
    rounds: list[int] | None = None,
    min_agreement: float | None = None,
    include_automatic: bool = True,
    soft_labels: bool = False,
    license: str = DEFAULT_LICENSE,
    progress: Callable[[int], None] | None = None,
    hooks: ExportHooks | None = None,
) -> Export:
    """Write every decided pair (of the given rounds) to a new path at or inside `out` (see write_rows); `license`
    is the licence field of an hf export's dataset card; `progress(n)` is told of each n pairs read; `hooks`: an
    export job's progress and Cancel (ExportStopped once `should_stop` says so, with nothing left at `out`)."""
    hooks = hooks or ExportHooks()

    def read(n: int) -> None:
        if progress is not None:
            progress(n)
        if hooks.read is not None:
            hooks.read(n)
        hooks.stop_if_asked()

    def written(n: int) -> None:
        if hooks.written is not None:
            hooks.written(n)
        hooks.stop_if_asked()

    def built(n: int) -> None:
        if hooks.built is not None:
            hooks.built(n)
        hooks.stop_if_asked()

    rows = preference_rows(
        decisions(rounds=rounds, min_agreement=min_agreement, include_automatic=include_automatic,
                  soft_labels=soft_labels, same_answers=False, progress=read, counted=hooks.counted)
    )
    hooks.stop_if_asked()
    if hooks.writing is not None:
        hooks.writing(len(rows))
    return Export(rows=len(rows), path=write_rows(rows, out, fmt, license=license, written=written,
                                                    built=built))
