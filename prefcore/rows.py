"""Reading prompt, pair and preference files (JSONL, CSV, Parquet) into checked rows; no Django here.

Every problem is reported as "FILE: line N: field F: what was expected", so one bad row can be found and fixed.
Reading is bounded (ImportLimits: rows, decoded bytes, JSON nesting), so a small file that decodes to gigabytes is
refused early: Parquet is read from its metadata first, then in small batches whose decoded size is counted.
Preference formats: TRL (prompt/chosen/rejected, strings or message lists, or implicit-prompt conversations),
Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") and UltraFeedback-binarised (message lists
and scores).
"""
from __future__ import annotations

import argparse
import codecs
import csv
import dataclasses
import difflib
import io
import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = {"system", "user", "assistant"}
MAX_NUMBER = 2**31 - 1  # round numbers and counts are PositiveIntegerFields: 32-bit on PostgreSQL
# The csv module refuses a cell over 128 KiB by default; an import's size is bounded by ImportLimits instead. Set once
# here: the limit is one for the whole process, and changing it per file would race between two imports.
csv.field_size_limit(2**31 - 1)
FORMATS = ("auto", "trl", "hh", "ultrafeedback")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# What a reader's `watch` is told it counts: the file read (its lines, or a Parquet file's rows), then its rows checked
LINES_READ, ROWS_READ, ROWS_CHECKED = "lines read", "rows read", "rows checked"
WATCH_STEPS = 100  # a reader tells its watch at most about this many times a pass (and at its end), however long


class ReadStopped(Exception):
    """The reader's `should_stop` said yes while the file was read or checked: nothing of it was returned."""


class Watch:
    """A long read's progress and stop signal: `progress(done, total, what)` (what: LINES_READ, ROWS_READ or
    ROWS_CHECKED) and `should_stop()`, each optional, asked every 1/WATCH_STEPS of a pass (a call a row cost more
    than the parsing of a short row). ReadStopped once `should_stop` says so."""

    def __init__(self, progress: Callable[[int, int, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.progress, self.should_stop = progress, should_stop
        self.next = 0  # the count at which it is told next (callers compare before calling: a call a row is slow)

    def __call__(self, done: int, total: int, what: str) -> None:
        """Told `done` of `total` counted: passed on, and the next count to tell set."""
        self.next = done + max(1, total // WATCH_STEPS)
        if self.should_stop is not None and self.should_stop():
            raise ReadStopped(f"asked to stop after {done:,} of {total:,} {what}")
        if self.progress is not None:
            self.progress(done, total, what)



class ImportProblem(Exception):
    """Rows that cannot be imported; each message names the file, the line and the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)

    def report(self, shown: int = 20) -> str:
        """The problems a line each (the first `shown`), so one reading of the file's errors fixes that many rows."""
        lines = self.problems[:shown]
        if len(self.problems) > shown:
            lines = [*lines, f"... and {len(self.problems) - shown} more problems"]
        return "\n".join(lines)


class RowError(Exception):
    """One field of one row is wrong: which field, and what was expected."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message


@dataclass(frozen=True)
class ImportLimits:
    """How much one import may read; each error names the setting that raises its limit."""

    max_rows: int = 200_000
    max_bytes: int = 256 * 2**20  # decoded: the text the rows hold, however well the file compressed it
    max_depth: int = 32  # JSON nesting: a row of message lists is 4 deep

    def too_many_rows(self, name: str, rows: int | str) -> ImportProblem:
        return ImportProblem([f"{name}: {rows} rows is over the limit of {self.max_rows:,} rows "
                              "(the setting PREFLOOP_IMPORT_MAX_ROWS raises it)"])

    def too_many_bytes(self, name: str, size: str) -> ImportProblem:
        return ImportProblem([f"{name}: {size} decoded is over the limit of {self.max_bytes:,} bytes "
                              "(the setting PREFLOOP_IMPORT_MAX_BYTES raises it)"])

    def too_deep(self, name: str, line: int | None = None) -> ImportProblem:
        where = f"{name}: line {line}" if line is not None else name
        return ImportProblem([f"{where}: JSON nested more than {self.max_depth} levels deep "
                              "(the setting PREFLOOP_IMPORT_MAX_DEPTH raises the limit)"])


def _depth(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in a value, counted without recursion and only up to limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in item)
    return deepest


class DuplicateKey(ValueError):
    """A JSON object that names one key twice ({"prompt": "a", "prompt": "b"}): which value is meant cannot be told,
    and json.loads would keep the last without a word. `line`: where, when a reader knows it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def repeated_key(pairs: list[tuple[str, Any]]) -> str | None:
    """The first key an object's (key, value) pairs give a second time, or None; one pass (a scan per key took
    seconds on a body of 40,000 keys)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json's object_pairs_hook that refuses a key given twice in one object (DuplicateKey)."""
    found = dict(pairs)
    if len(found) < len(pairs):
        key = repeated_key(pairs)
        raise DuplicateKey(f"the key {key!r} is given twice in one object: which value is meant cannot be told")
    return found


def _json(text: str) -> Any:
    """json.loads, with what Python's parser raises on hostile input as a JSONDecodeError-like ValueError, and a key
    given twice in one object refused (DuplicateKey)."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except RecursionError:
        raise _TooDeep() from None


def json_value(text: str) -> Any:
    """One JSON text as every reader of ours takes it, or a ValueError saying what is wrong with it (the caller names
    where): a key given twice in one object, nesting past Python's parser, an integer past its 4,300 digits."""
    try:
        return _json(text)
    except _TooDeep:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg}; column {exc.colno})") from None
    except DuplicateKey:
        raise
    except ValueError:  # what json raises besides JSONDecodeError: an integer past Python's 4,300 digits
        raise ValueError("a number of more than 4,300 digits: not a value any field takes") from None


def text_lines(data: bytes, name: str) -> list[str]:
    """A text file's lines as the JSONL reader splits them: UTF-8 (a byte-order mark dropped), a line ending at
    "\r\n", "\r" or "\n" and nowhere else (JSON strings hold U+2028 unescaped). ImportProblem if not UTF-8."""
    return _utf8_text(data, name).replace("\r\n", "\n").replace("\r", "\n").split("\n")


class _TooDeep(Exception):
    """JSON nested deeper than Python's parser goes (about 1,000 levels)."""


class _TooMany(Exception):
    """A JSON array of more elements than an import takes."""


_LARGEST_ID = 2**63 - 1  # the database's ids are 64-bit: a larger pair_id is no export's of ours

_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _json_array(text: str, max_items: int, watch: Watch, skipped: int = 0) -> list[tuple[int, Any]]:
    """(line its first character is on, value) for each element of the JSON array `text` (which starts with "["),
    so that an error in a row names its line in the file, not its position in the array. Stops reading past
    max_items elements. Syntax errors are json's own JSONDecodeError, with the line and column in `text`. `watch` is
    told the file's lines read (`skipped`: the blank lines before the array)."""
    decoder = json.JSONDecoder(object_pairs_hook=unique_keys)
    lines = text.count("\n") + 1 + skipped
    items: list[tuple[int, Any]] = []
    line, counted = 1, 0  # the line of text[counted]
    at = _SPACE.match(text, 1).end()
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            line, counted = line + text.count("\n", counted, at), at
            try:
                value, at = decoder.raw_decode(text, at)
            except RecursionError:
                raise _TooDeep() from None
            except DuplicateKey as exc:
                raise DuplicateKey(str(exc), line) from None
            items.append((line, value))
            if line + skipped >= watch.next:
                watch(line + skipped, lines, LINES_READ)
            if len(items) > max_items:
                raise _TooMany()
            at = _SPACE.match(text, at).end()
            if text.startswith(",", at):
                at = _SPACE.match(text, at + 1).end()
            elif text.startswith("]", at):
                at += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
    at = _SPACE.match(text, at).end()
    if at != len(text):
        raise json.JSONDecodeError("Extra data", text, at)
    return items


class Line(int):
    """A row's line in its file (compared, stored and counted as that number) and, where rows of a JSON array share
    the line (an array written on one line, as json.dump writes it), which element of the array it is, for people:
    every row of such a file was "line 1" in its errors."""

    element: int | None

    def __new__(cls, line: int, element: int | None = None):
        made = super().__new__(cls, line)
        made.element = element
        return made

    def __format__(self, spec: str) -> str:
        shown = int.__format__(int(self), spec)
        return f"{shown} (element {self.element} of the array)" if self.element and not spec else shown

    def __str__(self) -> str:
        return self.__format__("")


def _short(text: str, limit: int = 60) -> str:
    """A text cut for an error message."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def argument_problem(value: str) -> str | None:
    """What is wrong with a command-line argument no name or database can hold, or None: a NUL character, or a lone
    surrogate (how Python passes on bytes the shell could not decode as UTF-8, e.g. a file name in Latin-1, which
    failed only when something first wrote the name out: for the training command line, after its whole run)."""
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds bytes that are not UTF-8 text (at character {exc.start + 1})"
    return None


def read_negative_numbers(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser`, reading `--lr -1e-5` as the value -1e-5: Python 3.11's argparse took a negative number in scientific
    notation (and -inf, -nan) for a flag ("expected one argument"), so the range check that says what is wrong never
    ran. No flag of ours starts with a digit, "inf" or "nan", so an argument starting "-" and one of those is a value."""
    parser._negative_number_matcher = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)
    return parser


def check_text(value: str, field: str) -> str:
    """Text the database can store: no NUL character (PostgreSQL refuses it) and no lone surrogate (not Unicode
    text at all; it cannot be encoded as UTF-8)."""
    if "\x00" in value:
        raise RowError(field, f"contains a NUL character at position {value.index(chr(0)) + 1}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowError(field, f"contains a lone surrogate ({value[exc.start]!a}) at position {exc.start + 1}: "
                               "not Unicode text") from None
    return value


@dataclass(frozen=True)
class PromptRow:
    line: int
    text: str
    messages: list[dict] | None
    reference: str | None = None  # a prompt file's reference answer (`reference` or TRL's `completion`), for SPIN


@dataclass(frozen=True)
class PairRow:
    line: int
    prompt: PromptRow
    response_a: str
    response_b: str


@dataclass(frozen=True)
class PreferenceRow:
    line: int
    prompt: PromptRow
    chosen: str
    rejected: str
    is_tie: bool = False
    preference_prob: float | None = None
    round: int | None = None  # the row's own labelling round (the export writes one): used when the import names none
    # the export's pair_id with its labellers (annotator_ids): the pair on the exporting instance whose labels this row
    # sums up. Read back into that instance, the row adds nothing: its labels are there already.
    exported_pair: int | None = None
    exported_labellers: tuple[int, ...] = ()  # the export's annotator_ids: whose labels on that pair it sums up


def _plain(value: Any) -> Any:
    """Python values from what pandas and pyarrow hand back (numpy arrays, numpy scalars, NaN)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_rows(path: Path | str, name: str | None = None, limits: ImportLimits | None = None,
              watch: Watch | None = None) -> list[tuple[int, dict]]:
    """(line number, row) for each row of a JSONL, CSV or Parquet file; `name` is how errors call the file. `watch`
    is told the lines (a Parquet file's rows) read, and may stop the reading (ReadStopped)."""
    watch = watch or Watch()
    path = Path(path)
    name = name or path.name
    limits = limits or ImportLimits()
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None and path.is_dir():  # a data set folder (the hf export's) was "unknown file type '(none)'"
        shards = sorted(p.relative_to(path).as_posix() for p in path.glob("data/*.parquet"))[:2]
        raise ImportProblem([f"{name}: {path} is a folder, not a file: an import reads one .jsonl, .csv or .parquet "
                             "file" + (f" (this data set folder holds its rows in Parquet files: import each, e.g. "
                                       f"{', '.join(shards)})" if shards else "")])
    if kind is None:
        raise ImportProblem([f"{name}: unknown file type {path.suffix or '(none)'!r}: expected .jsonl, .csv or .parquet"])
    size = _regular_file(path, name).st_size  # before anything opens it
    if kind == "parquet":
        return _read_parquet(path, name, limits, watch)
    if size > limits.max_bytes:  # text files: the decoded size is the file's
        raise limits.too_many_bytes(name, f"{size:,} bytes")
    if kind == "jsonl":
        return _read_jsonl(path, name, limits, watch)
    return _read_csv(path, name, limits, watch)


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _regular_file(path: Path, name: str) -> os.stat_result:
    """The file's stat, once it is known to be a regular file (a link followed to what it names). The size check
    reads st_size, which is 0 for a pipe or a device: reading a FIFO waited forever for a writer, and a link to
    /dev/zero read until memory ran out. So anything else is refused here, before the file is opened."""
    found = path.stat()  # follows links: a link to a regular file is read as that file
    if not stat.S_ISREG(found.st_mode):
        what = next((words for test, words in _SPECIAL if test(found.st_mode)), "a special file")
        via = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise ImportProblem([f"{name}: {path}{via} is {what}, not a regular file: an import reads rows from a "
                             "regular file only (a pipe waits for a writer and a device never runs out, so either "
                             "could be read forever); save the rows to a file and import that"])
    return found


def _utf8_text(data: bytes, name: str) -> str:
    """A file's text (a byte-order mark, as some editors write, is not part of it), or an ImportProblem naming the
    line and byte where it stops being UTF-8: a file saved as Latin-1 or Windows-1252 is what usually lands here."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = exc.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data[:at].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1  # as the readers count
        raise ImportProblem([f"{name}: line {line}: not UTF-8 text (byte {at + 1} of the file is {data[at:at + 1]!r}): "
                             "save the file as UTF-8"]) from None


def _read_csv(path: Path, name: str, limits: ImportLimits, watch: Watch) -> list[tuple[int, dict]]:
    """Rows of a CSV file, each numbered by the line it starts on: an answer cell often spans several lines, so
    counting records (as a data frame does) names the wrong line after the first such cell."""
    text = _utf8_text(path.read_bytes(), name)  # as bytes: a cell's own "\r\n" is kept as written
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    # lines as csv counts them (reader.line_num): "\r\n", a lone "\r" (a classic Mac file, a cell's own) or "\n"
    # ends one. Counted by "\n" alone, a file of "\r" lines was "1 of 1 lines read" from its first row on, the
    # watch told at every row
    lines = text.count("\n") + text.count("\r") - text.count("\r\n") + 1
    header: list[str] | None = None
    rows: list[tuple[int, dict]] = []
    problems: list[str] = []
    end = 0  # the line the previous record ended on
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ImportProblem([f"{name}: line {start}: not valid CSV ({exc})"]) from None
        end = reader.line_num
        if end >= watch.next:
            watch(min(end, lines), lines, LINES_READ)
        if not any(cell.strip() for cell in cells):  # a blank line, or a spreadsheet's row of empty cells
            continue
        if header is None:
            header = [cell.strip() for cell in cells]  # "prompt ,chosen": a space typed after a comma or a name
            twice = [column for column, n in Counter(c for c in header if c).items() if n > 1]
            if twice:
                raise ImportProblem([f"{name}: line {start}: column {twice[0]!r} is named twice in the header"])
            continue
        if len(rows) >= limits.max_rows:
            raise limits.too_many_rows(name, "more than " + f"{limits.max_rows:,}")
        if any(cell.strip() for cell in cells[len(header):]):  # empty cells past the last column are a spreadsheet's
            problems.append(f"{name}: line {start}: {len(cells)} cells, but the header names {len(header)} columns")
            continue
        cells = cells[:len(header)] + [""] * (len(header) - len(cells))  # a short row's missing cells are empty
        # a column without a name (a spreadsheet's stray formatted column) holds nothing any field reads
        rows.append((start, {column: _CsvCell(cell) for column, cell in zip(header, cells, strict=True)
                             if column.strip()}))
    if header is None:
        raise ImportProblem([f"{name}: no header line: expected the first line to name the columns"])
    if problems:
        raise ImportProblem(problems)
    return rows


class _CsvCell(str):
    """Text read from a CSV cell: the one place a message list comes as JSON text (see _maybe_json_list)."""


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _type_depth(kind) -> int:
    """How deeply an Arrow type nests lists and structs."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return 1 + max((_type_depth(kind.field(i).type) for i in range(kind.num_fields)), default=0)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return 1 + _type_depth(kind.value_type)
    if pa.types.is_map(kind):
        return 1 + max(_type_depth(kind.key_type), _type_depth(kind.item_type))
    return 0


def _decoded_type(kind):
    """The Arrow type with every dictionary encoding replaced by its values' type."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        return _decoded_type(kind.value_type)
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(kind.field(i).name, _decoded_type(kind.field(i).type)) for i in range(kind.num_fields)])
    if pa.types.is_list(kind):
        return pa.list_(_decoded_type(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_decoded_type(kind.value_type))
    return kind


def _decoded_bytes(array) -> int:
    """About how many bytes an Arrow array holds once every dictionary in it is decoded, counted without decoding:
    a dictionary's values' sizes taken by its codes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        return sum(_decoded_bytes(chunk) for chunk in array.chunks)
    kind = array.type
    if pa.types.is_dictionary(kind):
        values = array.dictionary
        if not any(check(values.type) for check in (pa.types.is_string, pa.types.is_binary, pa.types.is_large_string,
                                                     pa.types.is_large_binary)):
            return _decoded_bytes(pc.take(values, array.indices))  # numbers, or a struct of dictionaries: cheap
        taken = pc.sum(pc.take(pc.binary_length(values), array.indices)).as_py() or 0
        return int(taken) + 8 * len(array)
    if pa.types.is_struct(kind):
        return sum(_decoded_bytes(array.field(i)) for i in range(kind.num_fields)) + len(array)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _decoded_bytes(array.flatten()) + 8 * len(array)
    return array.nbytes


def _read_parquet(path: Path, name: str, limits: ImportLimits, watch: Watch) -> list[tuple[int, dict]]:
    """Rows of a Parquet file, never decoding more than the limits allow: the row count and the uncompressed size
    from the metadata first, then small batches, each counted before it becomes Python objects (a column of one
    repeated string compresses a thousandfold, so the metadata alone cannot tell the decoded size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # every text column (nested ones included) read as (codes, distinct values): a value repeated in every row is
        # then held once however many rows a batch has, and _decoded_bytes counts what decoding would make before
        # anything is decoded (read plainly, 256 rows pointing at one 16 MiB value were 4 GiB in memory at once)
        texts = [column.path for column in pq.ParquetFile(path).schema if column.physical_type == "BYTE_ARRAY"]
        parquet = pq.ParquetFile(path, read_dictionary=texts)
        meta = parquet.metadata
        schema = parquet.schema_arrow
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ImportProblem([f"{name}: cannot read as PARQUET: {_first_line(exc)}"]) from None
    if meta.num_rows > limits.max_rows:
        raise limits.too_many_rows(name, f"{meta.num_rows:,}")
    stored = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    if stored > limits.max_bytes:
        raise limits.too_many_bytes(name, f"{stored:,} bytes")
    if max((_type_depth(f.type) for f in schema), default=0) + 1 > limits.max_depth:
        raise limits.too_deep(name)
    named = [f.name for f in schema]
    twice = sorted({column for column in named if named.count(column) > 1})
    if twice:  # a row read as a dict kept the last of them without a word; CSV and JSON refuse a name given twice too
        raise ImportProblem([f"{name}: column {column!r} is named twice: which one is meant cannot be told"
                             for column in twice])
    rows: list[tuple[int, dict]] = []
    decoded, told = 0, None
    plain = pa.schema([pa.field(f.name, _decoded_type(f.type)) for f in schema])
    try:
        for batch in parquet.iter_batches(batch_size=256):
            decoded += sum(_decoded_bytes(column) for column in batch.columns)  # counted before decoding
            if decoded > limits.max_bytes:
                raise limits.too_many_bytes(name, f"more than {decoded:,} bytes")
            batch = batch.cast(plain) if plain != batch.schema else batch
            for row in batch.to_pylist():
                rows.append((len(rows) + 1, {str(k): _plain(v) for k, v in row.items()}))
            if len(rows) >= watch.next:
                try:
                    watch(len(rows), meta.num_rows, ROWS_READ)
                except Exception as exc:  # the watcher's own (a database error, say): no fault of the file's
                    told = exc
                    raise
    except (ImportProblem, ReadStopped):
        raise
    except Exception as exc:
        if exc is told:
            raise
        raise ImportProblem([f"{name}: cannot read as PARQUET: {_first_line(exc)}"]) from None
    return rows


def _read_jsonl(path: Path, name: str, limits: ImportLimits, watch: Watch) -> list[tuple[int, dict]]:
    # lines as read_text() reads them (universal newlines): a Windows file's "\r\n" ends a line as "\n" does
    text = _utf8_text(path.read_bytes(), name).replace("\r\n", "\n").replace("\r", "\n")
    stripped = text.lstrip()
    if stripped.startswith("[") and not _array_on_one_line(stripped):  # a JSON array of objects is accepted too
        skipped = text[:len(text) - len(stripped)].count("\n")  # the blank lines stripped before it
        try:
            items = _json_array(stripped, limits.max_rows, watch, skipped)
        except _TooDeep:
            raise limits.too_deep(name) from None
        except _TooMany:
            raise limits.too_many_rows(name, "more than " + f"{limits.max_rows:,}") from None
        except json.JSONDecodeError as exc:  # its line in the file
            raise ImportProblem([f"{name}: line {exc.lineno + skipped}: not valid JSON ({exc.msg})"]) from None
        except DuplicateKey as exc:  # the line its object starts on
            raise ImportProblem([f"{name}: line {exc.line + skipped}: {exc}"]) from None
        except ValueError:  # what json raises besides JSONDecodeError: an integer past Python's 4,300 digits
            raise ImportProblem([f"{name}: a number of more than 4,300 digits: not a value any field takes"]) from None
        rows = [(line + skipped, item) for line, item in items]  # each row named by the line its object starts on
        starts = [line for line, _ in rows]
        if len(set(starts)) < len(starts):  # rows sharing a line (json.dump's one-line array): named by element too
            rows = [(Line(line, element), item) for element, (line, item) in enumerate(rows, 1)]
        for line, item in rows:  # row by row, so the refusal names the row
            if _depth(item, limits.max_depth) > limits.max_depth:
                raise limits.too_deep(name, line)
        return [(line, item) if isinstance(item, dict) else _not_object(name, line) for line, item in rows]
    rows, problems = [], []
    # Lines end at "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085, which JSON strings hold
    # unescaped (our own export writes them so), and cut such a row in two.
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if number >= watch.next:
            watch(number, len(lines), LINES_READ)
        if not line.strip():
            continue
        if len(rows) >= limits.max_rows:
            raise limits.too_many_rows(name, "more than " + f"{limits.max_rows:,}")
        try:
            item = _json(line)
        except _TooDeep:
            raise limits.too_deep(name, number) from None
        except json.JSONDecodeError as exc:
            problems.append(f"{name}: line {number}: not valid JSON ({exc.msg}; column {exc.colno})")
            continue
        except DuplicateKey as exc:
            problems.append(f"{name}: line {number}: {exc}")
            continue
        except ValueError:  # what json raises besides JSONDecodeError: an integer past Python's 4,300 digits
            problems.append(f"{name}: line {number}: a number of more than 4,300 digits: not a value any field takes")
            continue
        if not isinstance(item, dict):
            problems.append(f"{name}: line {number}: expected a JSON object with named fields")
            continue
        if _depth(item, limits.max_depth) > limits.max_depth:
            raise limits.too_deep(name, number)
        rows.append((number, item))
    if problems and stripped.startswith("{"):  # one object spread over lines, as json.dump(row, indent=2) writes it
        try:
            whole = _json(stripped)
        except (_TooDeep, ValueError):
            whole = None
        if isinstance(whole, dict):
            line = text[:len(text) - len(stripped)].count("\n") + 1
            if _depth(whole, limits.max_depth) > limits.max_depth:
                raise limits.too_deep(name, line)
            return [(line, whole)]
    if problems:
        raise ImportProblem(problems)
    return rows


def _array_on_one_line(text: str) -> bool:
    """Whether `text` (which starts with "[") is JSON Lines whose first line is an array: that line alone is JSON,
    and so is the next line that is not blank. Read as one array, its error named that next line ("Extra data"), a
    row that is fine, and not the first, which is no row."""
    first, *rest = text.split("\n")
    following = next((line for line in rest if line.strip()), None)
    if following is None:
        return False
    try:
        _json(first)
        _json(following)
    except (_TooDeep, ValueError):
        return False
    return True


def _typo_of(err: RowError, row: Any) -> str:
    """For a field missing from a row that has one spelt nearly so ("promt" for "prompt"): said, since "missing"
    alone sent people looking at a value that was there under another name."""
    if not err.message.startswith("missing") or not isinstance(row, dict) or err.field in row:
        return ""
    near = difflib.get_close_matches(err.field, [k for k in row if isinstance(k, str)], n=1, cutoff=0.75)
    return f" (the row has '{near[0]}': a misspelling of '{err.field}'?)" if near else ""


def _not_object(name, number):
    raise ImportProblem([f"{name}: line {number}: expected a JSON object with named fields"])


def _text(row: dict, field: str) -> str:
    value = row.get(field)
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, str):
        raise RowError(field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, "empty")
    return check_text(value, field)


_LIST_OF_OBJECTS = re.compile(r"\s*\[\s*\{")
_PYTHON_MESSAGES = re.compile(r"\s*\[\s*\{\s*'(role|content)'\s*:")


def _maybe_json_list(value: Any, field: str) -> Any:
    """CSV cells hold message lists as JSON text. A string in JSON Lines or Parquet is text, whatever it looks like
    (an answer that is a JSON array was refused there, or turned into a chat)."""
    if isinstance(value, _CsvCell) and _LIST_OF_OBJECTS.match(value):  # "[{", "[ {", "[\n  {" (indented JSON)
        try:
            decoded = _json(value)
        except _TooDeep:
            raise RowError(field, "JSON nested too deeply to read") from None
        except DuplicateKey as exc:
            raise RowError(field, str(exc)) from None
        except ValueError:  # not JSON after all (or a number of more than 4,300 digits): text
            if _PYTHON_MESSAGES.match(value):  # pandas' to_csv writes a list of dicts as Python's repr
                raise RowError(field, "a message list written as a Python list ([{'role': ...}]): write it as JSON "
                                      '([{"role": ...}], e.g. df[col].map(json.dumps) before to_csv)') from None
            return value
        if _depth(decoded, 8) > 8:
            raise RowError(field, "a message list nested more than 8 levels deep")
        return decoded
    return value


def _messages(value: Any, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowError(field, "expected a non-empty list of {role, content} messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RowError(field, f"message {i + 1} must be an object with 'role' and 'content'")
        if not isinstance(message["role"], str) or message["role"] not in ROLES:  # a list is not hashable
            raise RowError(field, f"message {i + 1} has role {message['role']!r}: expected system, user or assistant")
        if not isinstance(message["content"], str):
            raise RowError(field, f"message {i + 1} content must be text")
        check_text(message["content"], f"{field}: message {i + 1}")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def prompt_row(line: int, value: Any, field: str = "prompt") -> PromptRow:
    """A prompt from text or a chat (which must end with a user turn)."""
    value = _maybe_json_list(value, field)
    if isinstance(value, list):
        messages = _messages(value, field)
        if messages[-1]["role"] != "user":
            raise RowError(field, "a chat prompt must end with a user message")
        if not messages[-1]["content"].strip():  # as a text prompt that is empty
            raise RowError(field, "the last user message is empty")
        return PromptRow(line, messages[-1]["content"], messages)
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, str):
        raise RowError(field, f"expected text or a list of messages, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, "empty")
    return PromptRow(line, check_text(value, field), None)


def _response(value: Any, field: str) -> str:
    """A response: text, or a message list ending with the assistant's turn (TRL conversational). It may be empty:
    a model can answer with nothing, and that is a fair "rejected"."""
    value = _maybe_json_list(value, field)
    if isinstance(value, list):
        messages = _messages(value, field)
        if messages[-1]["role"] != "assistant":
            raise RowError(field, "a conversational response must end with an assistant message")
        return messages[-1]["content"]
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, str):
        raise RowError(field, f"expected text or a list of messages, got {type(value).__name__}")
    return check_text(value, field)


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def hh_split(transcript: str, field: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript split at its last assistant turn: (the chat before it, the assistant's answer)."""
    parts = _HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise RowError(field, "expected a transcript of '\\n\\nHuman: ...\\n\\nAssistant: ...' turns")
    turns = [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    if turns[-1][0] != "Assistant" or len(turns) < 2:
        raise RowError(field, "the transcript must end with an Assistant turn after a Human turn")
    messages = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()} for who, text in turns[:-1]]
    if messages[-1]["role"] != "user":
        raise RowError(field, "the last Assistant turn must answer a Human turn")
    if not messages[-1]["content"]:  # the prompt would be empty
        raise RowError(field, "the last Human turn is empty")
    return messages, turns[-1][1].strip()


PROMPT_SETTINGS = ("split", "tag")  # an import's settings for all its prompts
PAIR_SETTINGS = ("round", "labels_needed")  # an import's settings for all its pairs


def _no_settings(row: dict, names: tuple[str, ...]) -> None:
    """A row that sets what the import sets for all its rows is refused, naming the field: the value was dropped
    without a word, so a file's "split": "eval" rows went into train (and, a train prompt then, could never be
    imported as eval) and a pair's "round" went into no round."""
    for name in names:
        if _cell(row, name) is not None:
            raise RowError(name, f"set for the whole import (the Import page's choice, the command's --{name.replace('_', '-')}), "
                                 f"not per row: split the file by {name} and import each part with its own")


def _pair_row(line: int, row: dict) -> PairRow:
    _no_settings(row, PAIR_SETTINGS)
    return PairRow(line, prompt_row(line, row.get("prompt")), _text(row, "response_a"), _text(row, "response_b"))


def detect_format(row: dict) -> str:
    """Which preference format a row is in, from its fields."""
    if "score_chosen" in row or "score_rejected" in row:
        return "ultrafeedback"
    if "prompt" in row:
        return "trl"
    chosen = _maybe_json_list(row.get("chosen"), "chosen")
    if isinstance(chosen, str) and "Assistant:" in chosen:
        return "hh"
    if isinstance(chosen, list):
        return "trl"
    raise RowError("chosen", "cannot tell the format (expected TRL, HH-RLHF or UltraFeedback fields); pass --format")


def preference_row(line: int, row: dict, fmt: str = "auto") -> PreferenceRow:
    """One preference row (TRL, HH-RLHF or UltraFeedback; "auto" tells them apart by their fields), checked; a
    RowError names the field. The import page, the API and the training command line all read rows here."""
    if not isinstance(row, dict):
        raise RowError("row", "expected a JSON object with named fields")
    return _preference_row(line, row, fmt)


def _with_round(parsed: PreferenceRow, row: dict) -> PreferenceRow:
    """The row's own labelling round, as the export writes it, for the import to keep (training has no use for it)."""
    number = _round_number(row.get("round"))
    return parsed if number is None else dataclasses.replace(parsed, round=number)


def _round_number(value: Any) -> int | None:
    """A whole number: CSV text, or 3.0 from a Parquet export of an older version."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\d{1,10}(\.0*)?", value.strip()):  # "3", or "3.0" from pandas
        number = int(value.strip().partition(".")[0])
    if number is None or not 0 <= number <= MAX_NUMBER:
        raise RowError("round", f"expected a labelling round's number (a whole number from 0 to {MAX_NUMBER:,}), got "
                                f"{str(value)[:40]!r}")
    return number


def _preference_row(line: int, row: dict, fmt: str) -> PreferenceRow:
    if fmt == "auto":
        fmt = detect_format(row)
    if fmt == "hh":
        chat, chosen = hh_split(_text(row, "chosen"), "chosen")
        chat_r, rejected = hh_split(_text(row, "rejected"), "rejected")
        if chat != chat_r:
            raise RowError("rejected", "the dialogue before the last Assistant turn differs from the one in 'chosen'")
        prompt = PromptRow(line, chat[-1]["content"], chat) if len(chat) > 1 else PromptRow(line, chat[0]["content"], None)
        return PreferenceRow(line, prompt, chosen, rejected)
    if fmt == "ultrafeedback":
        chosen, rejected = _response(row.get("chosen"), "chosen"), _response(row.get("rejected"), "rejected")
        chosen_list = _maybe_json_list(row.get("chosen"), "chosen")
        if isinstance(chosen_list, list) and len(chosen_list) > 1:
            # the prompt is the chat before the answer, checked as any chat prompt (ends with a user turn that says
            # something), and the rejected answer's chat must be the same one
            chat = _messages(chosen_list, "chosen")[:-1]
            prompt = prompt_row(line, chat, "chosen")
            rejected_list = _maybe_json_list(row.get("rejected"), "rejected")
            if isinstance(rejected_list, list) and _messages(rejected_list, "rejected")[:-1] != chat:
                raise RowError("rejected", "the conversation before the last answer differs from the one in 'chosen'")
            if len(chat) == 1:
                prompt = PromptRow(line, prompt.text, None)
            given = row.get("prompt")
            # a row's own prompt beside the chat was never read: one that says another thing was dropped without a
            # word (UltraFeedback's prompt is the chat's last user turn)
            if isinstance(given, str) and given.strip() and given.strip() != prompt.text.strip():
                raise RowError("prompt", f"{_short(given)!r} differs from the conversation's last user turn in "
                                         f"'chosen' ({_short(prompt.text)!r})")
        else:
            prompt = prompt_row(line, row.get("prompt"))
        scores = []
        for field in ("score_chosen", "score_rejected"):
            value = row.get(field)
            try:
                scores.append(float(value) if value not in (None, "") else None)
            except (TypeError, ValueError, OverflowError):
                raise RowError(field, f"expected a number, got {value!r}") from None
            if scores[-1] is not None and not math.isfinite(scores[-1]):
                raise RowError(field, f"expected a finite number, got {value!r}")
        if None not in scores and scores[0] < scores[1]:  # the row says the rejected answer is the better one
            raise RowError("score_chosen", f"{scores[0]:g} is lower than score_rejected {scores[1]:g}: the chosen "
                                           "answer must score at least as high")
        tie = scores[0] is not None and scores[0] == scores[1]
        return PreferenceRow(line, PromptRow(line, prompt.text, prompt.messages), chosen, rejected, is_tie=tie)
    if fmt != "trl":
        raise RowError("format", f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    chosen, rejected = _response(row.get("chosen"), "chosen"), _response(row.get("rejected"), "rejected")
    if row.get("prompt") is not None:
        prompt = prompt_row(line, row.get("prompt"))
    else:  # implicit prompt: both conversations share everything before the last assistant turn
        if not isinstance(_maybe_json_list(row.get("chosen"), "chosen"), list):  # text answers: the prompt is missing
            raise RowError("prompt", "missing" if "prompt" in row else "missing (no field 'prompt', and 'chosen' "
                                     "is not a conversation that holds it)")
        chosen_chat = _messages(_maybe_json_list(row.get("chosen"), "chosen"), "chosen")[:-1]
        rejected_chat = _messages(_maybe_json_list(row.get("rejected"), "rejected"), "rejected")[:-1]
        if not chosen_chat:
            raise RowError("prompt", "missing (and 'chosen' holds no conversation before its answer)")
        if chosen_chat != rejected_chat:
            raise RowError("rejected", "the conversation before the last answer differs from the one in 'chosen'")
        prompt = prompt_row(line, chosen_chat, "chosen")
    prob = row.get("preference_prob")
    if isinstance(prob, bool):  # float(True) is 1.0: a flag is not a probability
        raise RowError("preference_prob", f"expected a number between 0.5 and 1, got {str(prob).lower()}")
    if prob not in (None, ""):
        try:
            prob = float(prob)
        except (TypeError, ValueError, OverflowError):
            raise RowError("preference_prob", f"expected a number between 0.5 and 1, got {prob!r}") from None
        if not 0.5 <= prob <= 1.0:
            raise RowError("preference_prob", f"expected a number between 0.5 and 1, got {prob}")
    else:
        prob = None
    return PreferenceRow(line, prompt, chosen, rejected, preference_prob=prob)


def _check_all(rows: list[tuple[int, dict]], name: str, parse, watch: Watch | None = None) -> list:
    """Parse every row; collect every problem before giving up, so one run names them all. `watch` is told the rows
    checked (from 0: the reading's count ended at its own total)."""
    out, problems = [], []
    watch = watch or Watch()
    watch.next = 0
    for checked, (line, row) in enumerate(rows):
        if checked >= watch.next:
            watch(checked, len(rows), ROWS_CHECKED)
        try:
            out.append(parse(line, row))
        except RowError as err:
            problems.append(f"{name}: line {line}: field '{err.field}': {err.message}{_typo_of(err, row)}")
    if problems:
        raise ImportProblem(problems)
    if not out:
        raise ImportProblem([f"{name}: no rows"])
    watch(len(rows), len(rows), ROWS_CHECKED)
    return out


REFERENCE_FIELDS = ("reference", "completion")


def _cell(row: dict, field: str) -> Any:
    """A field's value, None when it is missing or an empty CSV cell (a column only some rows fill). An empty JSON
    string is a value: an empty answer, which the caller refuses."""
    value = row.get(field)
    return None if isinstance(value, _CsvCell) and not value.strip() else value


def prompt_file_row(line: int, row: dict) -> PromptRow:
    """A prompt file's row: `prompt`, and optionally a reference answer, in `reference` or (TRL's prompt-completion
    format) `completion`: text, or a message list ending with the assistant's turn. SPIN rounds train the reference
    over the model's own answers, so an empty one is refused rather than taught, and so is one a `label` marks
    undesirable (TRL's unpaired format)."""
    _no_settings(row, PROMPT_SETTINGS)
    prompt = prompt_row(line, row.get("prompt"))
    given = [field for field in REFERENCE_FIELDS if _cell(row, field) is not None]
    if not given:
        return prompt
    if len(given) > 1:
        raise RowError(given[1], "a row gives its reference answer once: in 'reference' or in 'completion', not both")
    # TRL's unpaired (KTO) format: prompt, completion and whether the completion is desirable; an undesirable one is
    # no reference answer. Only a label that reads as false (TRL writes booleans; a CSV cell is text) marks one:
    # another column called "label" (a category, say) is not this format's.
    label = _cell(row, "label")
    if label is not None and str(label).strip().lower() in ("false", "0"):
        raise RowError("label", f"{label!r}: this row's {given[0]} is marked undesirable (TRL's unpaired "
                                "format), and a reference answer is taught as the better one: leave such rows "
                                "out, or their completion")
    reference = _response(row[given[0]], given[0])
    if not reference.strip():
        raise RowError(given[0], "empty: a reference answer is what SPIN rounds teach, so it must say something")
    return dataclasses.replace(prompt, reference=reference)


def read_prompts(path: Path | str, name: str | None = None, limits: ImportLimits | None = None,
                 watch: Watch | None = None) -> list[PromptRow]:
    name = name or Path(path).name
    return _check_all(read_rows(path, name, limits, watch), name, prompt_file_row, watch)


def read_pairs(path: Path | str, name: str | None = None, limits: ImportLimits | None = None,
               watch: Watch | None = None) -> list[PairRow]:
    name = name or Path(path).name
    return _check_all(read_rows(path, name, limits, watch), name, _pair_row, watch)


def read_preferences(
    path: Path | str, fmt: str = "auto", name: str | None = None, limits: ImportLimits | None = None, *,
    own_round: bool = True, also: Callable[[PreferenceRow, dict], PreferenceRow] | None = None,
    watch: Watch | None = None,
) -> list[PreferenceRow]:
    """`own_round`: read each row's `round` (PreferenceRow.round); off when the import names the round itself, so a
    column that means something else in another data set is not read at all. `also(parsed, row)`: the caller's
    reading of more of each row (the importer's of an export's cut-off marks and comments); a RowError it raises is
    reported with the file's other problems, naming the line and field."""
    if fmt not in FORMATS:
        raise ImportProblem([f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}"])
    name = name or Path(path).name
    def parse(line: int, row: dict) -> PreferenceRow:
        parsed = preference_row(line, row, fmt)
        parsed = _with_round(parsed, row) if own_round else parsed
        pair_id, labellers = row.get("pair_id"), row.get("annotator_ids")
        if isinstance(pair_id, float) and pair_id.is_integer() and abs(pair_id) <= _LARGEST_ID:
            pair_id = int(pair_id)  # as a spreadsheet or pandas writes an id
        if isinstance(pair_id, int) and not isinstance(pair_id, bool) and 0 < pair_id <= _LARGEST_ID \
                and labellers is not None:  # an export's row (any other data set's pair_id is not ours to read)
            ids = labellers if isinstance(labellers, (list, tuple)) else ()
            parsed = dataclasses.replace(parsed, exported_pair=pair_id, exported_labellers=tuple(
                int(i) for i in ids if isinstance(i, (int, float)) and not isinstance(i, bool) and float(i).is_integer()))
        return parsed if also is None else also(parsed, row)

    return _check_all(read_rows(path, name, limits, watch), name, parse, watch)
