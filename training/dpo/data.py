"""Preference pairs: the dataclass the trainer takes, loading them from a file (JSONL; CSV, Parquet and JSON arrays as
the import page reads them), and tokenizing with truncation.

Prompts go through the one chat template (prefcore.chat) once per pair, so chosen and rejected share exactly the
same prompt token ids; each response is its text's tokens plus exactly one EOS.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prefcore import rows
from prefcore.chat import prompt_token_ids, response_token_ids


@dataclass
class PreferencePair:
    prompt: str | list[dict]  # text or chat messages
    chosen: str
    rejected: str
    preference_prob: float | None = None  # soft label; None = hard (1 - label_smoothing)
    ref_chosen_logp: float | None = None  # cached reference log-probs; when both given they are NOT recomputed
    ref_rejected_logp: float | None = None
    key: object = None  # caller's id, untouched
    chosen_flags: frozenset[str] = frozenset()  # rule flags of the responses for loss terms, e.g. {"cut"}
    rejected_flags: frozenset[str] = frozenset()

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen_logp is not None and self.ref_rejected_logp is not None


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool

    @property
    def length(self) -> int:
        """Tokens in its `[prompt | chosen | rejected]` training row."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    def row(self) -> tuple[list[int], list[int], list[int]]:
        return self.prompt_ids, self.chosen_ids, self.rejected_ids


LOGP_ROUNDING = 1e-3


def _as_float(value: int | float) -> float:
    """The number as a float; NaN for one past a float's range (NaN fails every comparison)."""
    try:
        return float(value)
    except OverflowError:
        return math.nan


def pair_from_row(row: dict, line: int = 0) -> PreferencePair:
    """One preference row as a pair, read by the same rules as the import page (`prefcore.rows`: TRL with an
    explicit or implicit prompt, HH-RLHF transcripts, UltraFeedback), plus what only training reads: cached
    reference log-probs (`ref_chosen_logp`, `ref_rejected_logp`) and a `key` (or `id`). A bad row is a ValueError
    naming the field. An UltraFeedback tie (equal scores) trains as a coin flip (preference_prob 0.5)."""
    try:
        parsed = rows.preference_row(line, row)
    except rows.RowError as err:
        if err.message == "missing":
            raise ValueError(f"field {err.field!r} is missing") from None
        raise ValueError(f"field {err.field!r}: {err.message}") from None
    refs = []
    for field in ("ref_chosen_logp", "ref_rejected_logp"):
        value = row.get(field, row.get(field + "s"))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"field {field!r}: expected a number, got {value!r}")
        # NaN, infinity or a positive sum is no log-prob (a sum of log-softmax values may round a hair above 0); an
        # integer past a float's range (math.isfinite raised OverflowError on it) is none either
        if value is not None and not (-math.inf < _as_float(value) <= LOGP_ROUNDING):
            shown = repr(value) if not isinstance(value, int) or abs(value) < 10**15 else \
                f"{'a negative' if value < 0 else 'an'} integer of {len(str(abs(value)))} digits"
            raise ValueError(f"field {field!r}: expected a finite log-probability (0 or below), got {shown}")
        refs.append(None if value is None else float(value))
    flags = []
    for field in ("chosen_flags", "rejected_flags"):
        value = row.get(field)
        value = [] if value is None else value  # null: none (a Parquet column's cell in a row without flags)
        if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
            raise ValueError(f"field {field!r}: expected a list of flag names, e.g. [\"cut\"]")
        flags.append(frozenset(value))
    prompt = parsed.prompt.messages if parsed.prompt.messages is not None else parsed.prompt.text
    prob = 0.5 if parsed.is_tie else parsed.preference_prob
    return PreferencePair(
        prompt=prompt, chosen=parsed.chosen, rejected=parsed.rejected, preference_prob=prob,
        ref_chosen_logp=refs[0], ref_rejected_logp=refs[1], key=row.get("key", row.get("id")),
        chosen_flags=flags[0], rejected_flags=flags[1],
    )


def load_pairs_jsonl(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file of TRL rows, its lines read as the import page reads them (a byte-order mark, Windows
    or old Mac line ends; a key given twice refused); a bad row is a ValueError naming the file, line and field."""
    path = Path(path)
    try:
        lines = rows.text_lines(path.read_bytes(), str(path))
    except rows.ImportProblem as exc:
        raise _problem(exc, path) from None

    def numbered():
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, rows.json_value(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None

    return _pairs(path, numbered())


def _problem(exc: rows.ImportProblem, path: Path) -> ValueError:
    """The reader's first problem as a ValueError worded as the loaders' own ("FILE:LINE: ...", not "FILE: line LINE:
    ...")."""
    return ValueError(exc.problems[0].replace(f"{path}: line ", f"{path}:", 1))


def _pairs(path: Path, numbered: Iterable[tuple[int, dict]],
           cells: Callable[[dict], dict] | None = None) -> list[PreferencePair]:
    """The pairs of (line number, row) items read from `path`, each row read by `cells` first where given: a bad row
    is a ValueError naming the file and line."""
    pairs = []
    for number, row in numbered:
        try:
            pairs.append(pair_from_row(cells(row) if cells else row, number))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


# Read with prefcore.rows as the import page reads them; any other name (.jsonl, a pipe such as /dev/stdin) as JSONL
TABLE_SUFFIXES = (".csv", ".parquet", ".json")
# A training file is the user's own: the web import's limits (200,000 rows, 256 MiB) are not the trainer's
UNLIMITED = rows.ImportLimits(max_rows=sys.maxsize, max_bytes=sys.maxsize)
# The cells only training reads, which a CSV holds as text: numbers, and lists of flag names as JSON
CSV_NUMBERS = ("ref_chosen_logp", "ref_rejected_logp", "ref_chosen_logps", "ref_rejected_logps")
CSV_LISTS = ("chosen_flags", "rejected_flags")


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Pairs from a file of preference rows: a .csv, .parquet or .json (an array, or JSON Lines) file read as the
    import page reads it, anything else as JSONL (load_pairs_jsonl). A bad row is a ValueError naming the file, line
    and field, as load_pairs_jsonl's are."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return load_pairs_jsonl(path)
    try:
        table = rows.read_rows(path, str(path), UNLIMITED)
    except rows.ImportProblem as exc:
        raise _problem(exc, path) from None
    return _pairs(path, table, _csv_cells if path.suffix.lower() == ".csv" else None)


def _csv_cells(row: dict) -> dict:
    """A CSV row's training-only cells as a JSON row holds them: an empty cell is no value, a number cell a number
    (text that is none stays text, and pair_from_row names it), a flag list's cell JSON text."""
    row = dict(row)
    for field in (*CSV_NUMBERS, *CSV_LISTS):
        if field not in row:
            continue
        text = row[field].strip()
        if not text:
            del row[field]
        elif field in CSV_NUMBERS:
            try:
                row[field] = float(text)
            except ValueError:
                pass
        else:
            try:  # as the JSONL reader parses a line: nesting past json's parser (a RecursionError) is a ValueError
                row[field] = rows.json_value(text)
            except ValueError:
                raise ValueError(f"field {field!r}: expected a JSON list of flag names, e.g. [\"cut\"], got "
                                 f"{text[:40]!r}") from None
    return row


def truncate(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, max_prompt_length: int):
    """Fit prompt + each response into max_length: first keep the end of the prompt (max_prompt_length), then cut
    the ends of the responses. Returns (prompt, chosen, rejected, truncated)."""
    longest = max(len(chosen), len(rejected))
    cut = False
    if len(prompt) + longest > max_length and len(prompt) > max_prompt_length:
        prompt, cut = prompt[-max_prompt_length:], True
    room = max_length - len(prompt)
    if longest > room:
        chosen, rejected, cut = chosen[:room], rejected[:room], True
    return prompt, chosen, rejected, cut


def tokenize_pair(tokenizer, pair: PreferencePair, max_length: int, max_prompt_length: int) -> TokenizedPair:
    prompt = prompt_token_ids(tokenizer, pair.prompt)
    chosen = response_token_ids(tokenizer, pair.chosen)
    rejected = response_token_ids(tokenizer, pair.rejected)
    return TokenizedPair(*truncate(prompt, chosen, rejected, max_length, max_prompt_length))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), batches in a seeded random order."""
    import random

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches

