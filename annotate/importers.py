"""Import prompts, unlabelled pairs and labelled preferences from files.

Every row is checked first (prefcore.rows, within the PREFLOOP_IMPORT_MAX_* limits): one bad row stores nothing.
Only then is anything written, in transactions of CHUNK_ROWS rows each, so the database's write lock is held for
a fraction of a second at a time, never for the whole file (on SQLite every label people submit waits for it).
An import that is stopped part-way (cancelled, or Ctrl-C at the command line) keeps the chunks it wrote and says how
far it got (`ImportStopped`; cancelled while the file is read and checked, it has stored nothing); running it again
adds the rest, because rows already in the database (same normalised prompt, same responses) are skipped, so
importing a file twice adds nothing. A preference on a pair that is here without one (pushed unlabelled, or
labelled by people only) is recorded on that pair as the import's label, whichever way round its two answers were
stored. Pairs and preferences whose prompt is an eval prompt (the same normalised text: case, Unicode form and
spacing aside) are set aside and reported: eval prompts measure the model and are never trained on.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX, make_password
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When

from generation.length import LENGTH_LIMIT
from generation.models import Prompt, Response, normalised_hash
from generation.pairing import near_duplicate
from prefcore import rows as formats
from prefcore.rows import ImportLimits, ImportProblem, PromptRow  # noqa: F401  (callers catch ImportProblem from here)

from .dataset import decide
from .models import (
    MAX_NUMBER,
    TIE,
    A,
    AnnotatorProfile,
    B,
    Label,
    LabellingRound,
    Pair,
    Route,
    in_lock_order,
    lock_pairs,
)

IMPORT_ACCOUNT = "import"
IMPORT_FALLBACK_ACCOUNT = "import:labels"  # ":" is no character of a person's user name (Django's username rules)
MAX_LABELS_NEEDED = 1000
CHUNK_ROWS = 500  # rows written per transaction (about a third of a second of the write lock on 2 CPU cores)
# On SQLite, a pause between chunks with the write lock free: a writer waiting for it (a label submission) polls
# every 100 ms at most, and without the pause the next chunk took the lock again before any poll came.
WRITERS_GAP_S = 0.05


@dataclass(frozen=True)
class ImportResult:
    created: int
    skipped: int
    set_aside: tuple[int, ...] = ()  # lines whose prompt is an eval prompt: not imported, never trained on
    # lines preferring the other answer (or a tie) of a pair the import account has labelled already, earlier in the
    # same file or by an earlier import: the stored label is kept, and the disagreement said rather than hidden
    disagreeing: tuple[int, ...] = ()
    # lines whose two answers are one text: a pair that can only tie teaches nothing (training leaves such pairs out,
    # and an annotator could only press tie on it)
    same_answers: tuple[int, ...] = ()
    # lines added as pairs whose two answers are nearly the same (generation.pairing.near_duplicate): stored, held
    # back from people as generation holds such pairs back (annotate.selection), since people could only tie them
    held_back: tuple[int, ...] = ()

    def __str__(self) -> str:
        text = f"{self.created} added, {self.skipped} already present"
        if self.set_aside:
            text += (f", {len(self.set_aside)} set aside because their prompt is an eval prompt (eval prompts are "
                     f"never trained on): {_lines(self.set_aside)}")
        if self.disagreeing:
            verb = "it disagrees" if len(self.disagreeing) == 1 else "they disagree"
            text += (f", {len(self.disagreeing)} not added because {verb} with the label already imported for the same "
                     f"prompt and answers (that label is kept): {_lines(self.disagreeing)}")
        if self.same_answers:
            text += (f", {len(self.same_answers)} not added because both answers are the same text (a pair that can "
                     f"only tie teaches nothing): {_lines(self.same_answers)}")
        if self.held_back:
            text += (f", {len(self.held_back)} of those added held back from people because their two answers are "
                     f"nearly the same (people could only tie them): {_lines(self.held_back)}")
        return text


    def __add__(self, other: ImportResult) -> ImportResult:
        return ImportResult(self.created + other.created, self.skipped + other.skipped,
                            self.set_aside + other.set_aside, self.disagreeing + other.disagreeing,
                            self.same_answers + other.same_answers, self.held_back + other.held_back)


class ImportStopped(Exception):
    """The import stopped before its last row, asked to (`why`: "cancelled"), interrupted, or failed part-way
    (`error`: the database's error, say): the first `rows` of `total` rows were handled and their chunks stored
    (`result` counts them); running the import again adds the rest. `reading`: asked to stop while the file was
    read and checked, before any row was written (rows and total 0: nothing was stored)."""

    def __init__(self, result: ImportResult, rows: int, total: int, why: str, error: Exception | None = None, *,
                 reading: bool = False):
        self.result, self.rows, self.total, self.why, self.error = result, rows, total, why, error
        self.reading = reading  # stopped while the file was read and checked, before any row was written
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.reading:
            return f"{self.why} while the file was read and checked: nothing was stored"
        return (f"{self.why} after {self.rows:,} of {self.total:,} rows; those are stored ({self.result}); "
                "importing the file again adds the rest (rows already stored are skipped)")


def _read(read: Callable[[formats.Watch], list], on_reading: Callable[[int, int, str], None] | None,
          should_stop: Callable[[], bool] | None) -> list:
    """The file's checked rows, `read` told a watch: `on_reading(done, total, what)` of the lines read and the rows
    checked (prefcore.rows.Watch), and `should_stop` asked as often, so a Cancel is heard while a large file is read
    (seconds, before any row is written). Stopped there, ImportStopped with nothing stored."""
    try:
        return read(formats.Watch(on_reading, should_stop))
    except formats.ReadStopped:
        raise ImportStopped(ImportResult(0, 0), 0, 0, "cancelled", reading=True) from None


def _chunked(rows: list, write: Callable[[list], ImportResult], should_stop: Callable[[], bool] | None,
             on_read: Callable[[int], None] | None,
             on_chunk: Callable[[ImportResult, int], None] | None = None) -> ImportResult:
    """Told `on_read` how many rows the file holds (all of them checked), `write` each chunk of CHUNK_ROWS rows in
    a transaction of its own; the sum of their results. `on_chunk(result, rows)` is told, inside each chunk's
    transaction once its rows are written, what the chunks so far have stored and how many rows they handled: what
    it writes (an import job's counts) is committed with the chunk, or rolled back with it. Asked to stop
    (`should_stop`, between chunks) or interrupted (Ctrl-C, inside one: that chunk is rolled back), raise
    ImportStopped with what was stored."""
    if on_read is not None:
        on_read(len(rows))
    total, done = ImportResult(0, 0), 0
    try:
        for start in range(0, len(rows), CHUNK_ROWS):
            if should_stop is not None and should_stop():
                raise ImportStopped(total, done, len(rows), "cancelled")
            chunk = rows[start:start + CHUNK_ROWS]
            with transaction.atomic():
                part = write(chunk)
                if on_chunk is not None:
                    on_chunk(total + part, done + len(chunk))
            total, done = total + part, done + len(chunk)
            if done < len(rows) and connection.vendor == "sqlite" and not connection.in_atomic_block:
                time.sleep(WRITERS_GAP_S)
    except KeyboardInterrupt:
        raise ImportStopped(total, done, len(rows), "interrupted") from None
    except ImportStopped:
        raise
    except Exception as exc:  # the chunk in flight is rolled back; those before it are stored, and that is said
        if not done:
            raise
        raise ImportStopped(total, done, len(rows), f"failed ({type(exc).__name__}: {exc})", exc) from exc
    return total


def _lines(numbers: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, numbers[:20])) + (" ..." if len(numbers) > 20 else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


ADDED, PRESENT, DISAGREES = "added", "present", "disagrees"  # what a row does to a pair that is already there


def _limits() -> ImportLimits:
    return ImportLimits(max_rows=settings.PREFLOOP_IMPORT_MAX_ROWS, max_bytes=settings.PREFLOOP_IMPORT_MAX_BYTES,
                        max_depth=settings.PREFLOOP_IMPORT_MAX_DEPTH)


def printable(name: str, limit: int) -> str:
    """A file name as stored and shown: printable, valid UTF-8, `limit` characters at most (a name may be anything)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _source(name: str) -> str:
    """Where rows came from, as stored (200 characters at most)."""
    return printable(f"import:{name}", 200)


def _check_round(number: int | None) -> None:
    if number is not None and not 0 <= number <= MAX_NUMBER:
        raise ImportProblem([f"round {number}: expected a round number from 0 to {MAX_NUMBER:,}"])


def _check_tag(tag: str) -> None:
    if len(tag) > 100 or not tag.isprintable():
        raise ImportProblem([f"tag {tag[:40]!r}: expected up to 100 printable characters"])


def _chat(row: PromptRow) -> list | None:
    """The messages a prompt is stored with: none for one user message, which is the same prompt as its text (as HH
    and UltraFeedback rows give it). Hashed as a chat, an eval prompt written so was not found and became a train
    prompt, and the app's own export (plain prompts as one message, once any prompt is a chat) imported as new."""
    messages = row.messages
    if messages and len(messages) == 1 and messages[0]["role"] == "user":
        return None
    return messages


def _hash(row: PromptRow) -> str:
    return normalised_hash(_chat(row) or row.text)


def _stored_splits(hashes: list[str]) -> dict[str, str]:
    """The split of each of these prompts stored already, by hash (queried a thousand at a time)."""
    found: dict[str, str] = {}
    for start in range(0, len(hashes), 1000):
        found.update(Prompt.objects.filter(hash__in=hashes[start:start + 1000]).values_list("hash", "split"))
    return found


def _stored_prompts(hashes: list[str]) -> dict[str, Prompt]:
    return {p.hash: p for p in Prompt.objects.filter(hash__in=hashes)}


def _prompts_by_hash(rows: Iterable[PromptRow], *, split: str, tag: str, source: str,
                     hashes: Iterable[str] | None = None) -> tuple[dict[str, Prompt], int]:
    """Existing or new Prompt rows for these prompts, keyed by hash (`hashes`: the rows' own, when the caller has
    them already); also how many were created."""
    rows = list(rows)
    wanted: dict[str, PromptRow] = {}
    for prompt_hash, row in zip(hashes if hashes is not None else map(_hash, rows), rows, strict=True):
        wanted.setdefault(prompt_hash, row)  # the first row's wording, of rows that are one prompt (a dict of zip kept the last)

    def stored() -> dict[str, Prompt]:
        return _stored_prompts(list(wanted))

    def missing(found: dict[str, Prompt]) -> list[Prompt]:
        # in hash order: two imports inserting the same prompts in file order could each wait on the other's
        # (PostgreSQL reports a deadlock); in one order, the second waits for the first and then finds its prompts
        return [Prompt(text=r.text, messages=_chat(r), split=split, tag=tag, source=source, hash=h)
                for h, r in sorted(wanted.items(), key=lambda item: item[0]) if h not in found]

    found = stored()
    new = missing(found)
    if not new:
        return found, 0
    try:
        with transaction.atomic():
            Prompt.objects.bulk_create(new, batch_size=500)
    except IntegrityError:
        # another import stored some of them since the query (the default queue's worker runs two at once): theirs
        # are found, the rest added; one more race in this instant is found too (and counted as added)
        new = missing(stored())
        Prompt.objects.bulk_create(new, batch_size=500, ignore_conflicts=True)
        return stored(), len(new)
    found.update((p.hash, p) for p in new)
    if any(p.pk is None for p in new):  # backends that return no ids from bulk_create
        found = stored()
    return found, len(new)


def import_prompts(
    path: Path | str, *, split: str = Prompt.TRAIN, tag: str = "", name: str | None = None,
    progress: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
    on_read: Callable[[int], None] | None = None, on_chunk: Callable[[ImportResult, int], None] | None = None,
    on_reading: Callable[[int, int, str], None] | None = None,
) -> ImportResult:
    """Prompts from a file with a `prompt` column (text or a message list) and, optionally, a reference answer per
    row (`reference`, or TRL's `completion`), which SPIN rounds train over the model's own answers."""
    if split not in (Prompt.TRAIN, Prompt.EVAL):
        raise ImportProblem([f"unknown split {split!r}: expected train or eval"])
    _check_tag(tag)
    name = name or Path(path).name
    rows = _read(lambda watch: formats.read_prompts(path, name, _limits(), watch), on_reading, should_stop)
    source = _source(name)
    if split == Prompt.EVAL:
        # A prompt stored as a train prompt keeps its split (its answers may have been trained on), and an eval
        # prompt must never have been: such a line was counted "already present" and the eval set went without it.
        hashes = [_hash(row) for row in rows]
        stored = _stored_splits(hashes)
        trained = [row.line for row, h in zip(rows, hashes, strict=True) if stored.get(h) == Prompt.TRAIN]
        if trained:
            raise ImportProblem([f"{name}: line {line}: field 'prompt': stored already as a train prompt, whose "
                                 "answers may have been trained on, so it cannot be an eval prompt (eval prompts "
                                 "are never trained on)" for line in trained])

    def write(chunk: list[PromptRow]) -> ImportResult:
        hashes = [_hash(row) for row in chunk]
        before = set(_stored_prompts(hashes)) if any(row.reference is not None for row in chunk) else None
        prompts, created = _prompts_by_hash(chunk, split=split, tag=tag, source=source, hashes=hashes)
        added = [False] * len(chunk)
        if before is not None:  # a row adds its prompt, or its reference answer to a prompt stored before, or nothing
            # no reference onto an eval prompt a train file names: the row is set aside (below), as one without a
            # reference is; stored, it was counted "added" and trained by no SPIN round (they read train prompts)
            held = {h for h in hashes if split == Prompt.TRAIN and prompts[h].split == Prompt.EVAL}
            added = _add_references(chunk, hashes, prompts, before, source, held)
            created = sum(added)
        if progress:
            progress(len(chunk))
        # a train prompt stored already as an eval prompt stays one: said, not counted as present
        set_aside = tuple(row.line for row, h, new in zip(chunk, hashes, added, strict=True)
                          if split == Prompt.TRAIN and prompts[h].split == Prompt.EVAL and not new)
        return ImportResult(created, len(chunk) - created - len(set_aside), set_aside=set_aside)

    return _chunked(rows, write, should_stop, on_read, on_chunk)


def _add_references(chunk: list[PromptRow], hashes: list[str], prompts: dict[str, Prompt], before: set[str],
                    source: str, held: set[str] = frozenset()) -> list[bool]:
    """Store the rows' reference answers their prompt does not have yet: the same text twice (in one file, or by two
    imports at once: the prompts are locked first) is stored once. Per row, whether it added something: its prompt
    (the first row of a prompt not stored before) or a reference answer."""
    _lock_prompts(list({p.pk: p for p in prompts.values()}.values()))
    have = set(Response.objects.filter(is_reference=True, prompt__in=list(prompts.values()))
               .values_list("prompt_id", "text"))
    new, added, first = [], [], set()
    for h, row in zip(hashes, chunk, strict=True):
        prompt = prompts[h]
        new_prompt = h not in before and h not in first
        first.add(h)
        new_reference = row.reference is not None and h not in held and (prompt.pk, row.reference) not in have
        if new_reference:
            have.add((prompt.pk, row.reference))
            new.append(Response(prompt=prompt, text=row.reference, is_reference=True, source=source))
        added.append(new_prompt or new_reference)
    Response.objects.bulk_create(new, batch_size=500)
    return added


def _round(number: int | None) -> LabellingRound | None:
    if number is None:
        return None
    round_, _ = LabellingRound.objects.get_or_create(number=number)
    return round_


NEW_ROUND_PERMISSION = "annotate.add_labellinground"


def _no_new_round(number: int) -> str:
    return (f"labelling round {number} does not exist, and this account may not add labelling rounds (it needs "
            f"{NEW_ROUND_PERMISSION!r}): create the round first, or name one that exists")


def _check_new_round(number: int | None, new_rounds: bool) -> None:
    """Refused before anything is read or stored: a round the import names that is not there, when its caller may
    not add rounds (`new_rounds` False). Pushing pairs made any round number asked for, with its default settings,
    for staff the labelling-rounds page and API refuse to add one for."""
    if number is not None and not new_rounds and not LabellingRound.objects.filter(number=number).exists():
        raise ImportProblem([_no_new_round(number)])


def _lock_prompts(prompts: list[Prompt]) -> None:
    """Lock the chunk's prompts until it commits, in hash order (as they are inserted). An import of the same rows at
    the same moment then waits here and finds the pairs this one adds; before, on PostgreSQL, each read that the
    pairs were not there, and both added them. (On SQLite the IMMEDIATE transaction already holds the one write
    lock.)"""
    if prompts:
        list(in_lock_order(Prompt.objects.filter(pk__in=[p.pk for p in prompts]), "hash").values_list("pk"))


def _find(seen: dict[tuple[str, str, str], int], prompt_hash: str, a: str, b: str) -> tuple[int | None, bool]:
    """The pair in `seen` with these two answers on this prompt, either way round, and whether it holds them as A
    and B (False: the other way round)."""
    found = seen.get((prompt_hash, a, b))
    if found is not None:
        return found, True
    return seen.get((prompt_hash, b, a)), False


def _existing_pairs(hashes: list[str]) -> tuple[dict[tuple[str, str, str], int], dict[int, tuple[str, str, str]]]:
    """(prompt hash, text A, text B) -> a pair with those texts; and every such pair's id -> its key (two pairs can
    hold the same texts: the same two answers both ways round, or sampled twice)."""
    rows = Pair.objects.filter(prompt__hash__in=hashes).values_list(
        "prompt__hash", "response_a__text", "response_b__text", "pk")
    keys = {pk: (h, a, b) for h, a, b, pk in rows}
    return {key: pk for pk, key in keys.items()}, keys


def _exported_pair(row, keys: dict[int, tuple[str, str, str]], prompt_hash: str, a: str, b: str):
    """(pair id, holds them as A and B) of the pair an export's row names by its pair_id, when that pair here holds the
    row's texts on its prompt either way round; (None, True) otherwise. Found by texts alone, a row of one of two twin
    pairs landed on the other, and was added to it as a label of the import."""
    pair_id = getattr(row, "exported_pair", None)
    key = keys.get(pair_id) if pair_id is not None else None
    if key == (prompt_hash, a, b):
        return pair_id, True
    if key == (prompt_hash, b, a):
        return pair_id, False
    return None, True


class _NewPairs:
    """The pairs an import adds (two responses and a pair each, and the import's label on it for preferences),
    written with bulk inserts a batch at a time: one INSERT of each per row held the write lock a millisecond a row
    (minutes for a large file, with every label people submitted meanwhile waiting on SQLite). Until its batch is
    written a new pair is known by a stand-in id (negative), which the import's own bookkeeping uses as it uses a
    stored pair's id."""

    BATCH = 500

    def __init__(self, source: str):
        self.source, self.waiting, self.count = source, [], 0

    def add(self, prompt: Prompt, text_a: str, text_b: str, *, round_, label: dict | None = None,
            finish: tuple[str, str] = ("", ""), **fields) -> int:
        """`finish`: the two answers' finish reasons, where the file says them (an export's cut-off marks)."""
        self.count += 1
        self.waiting.append((prompt, text_a, text_b, round_, label, finish, fields))
        if len(self.waiting) >= self.BATCH:
            self.flush()
        return -self.count

    def flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        if not waiting:
            return
        responses = _inserted([
            Response(prompt=prompt, version=None, text=text, source=self.source, finish_reason=reason)
            for prompt, text_a, text_b, _, _, finish, _ in waiting
            for text, reason in zip((text_a, text_b), finish, strict=True)])
        pairs = _inserted([
            Pair(prompt=prompt, response_a=responses[2 * k], response_b=responses[2 * k + 1], origin=Pair.IMPORTED,
                 round=round_, **fields)
            for k, (prompt, _, _, round_, _, _, fields) in enumerate(waiting)])
        Label.objects.bulk_create([Label(pair=pair, **label)
                                   for pair, (*_, label, _, _) in zip(pairs, waiting, strict=True) if label is not None])


def _inserted(objects: list) -> list:
    """The objects, stored with their ids: one bulk insert where the database returns the new ids (PostgreSQL,
    SQLite 3.35 and later), one INSERT each where it does not (older SQLite, which Django still supports)."""
    if not objects:
        return objects
    if connection.features.can_return_rows_from_bulk_insert:
        return type(objects[0]).objects.bulk_create(objects)
    for obj in objects:
        obj.save(force_insert=True)
    return objects


def _write_pairs(rows, name, make, progress: Callable[[int], None] | None,
                 should_stop: Callable[[], bool] | None, on_read: Callable[[int], None] | None,
                 on_chunk: Callable[[ImportResult, int], None] | None = None) -> ImportResult:
    source = _source(name)
    new = _NewPairs(source)  # one for the whole import: a stand-in id names one new pair, whichever chunk it is in
    held_back = getattr(make, "held_back", [])  # the lines `make` held back as near-duplicates (import_pairs)

    def write(chunk) -> ImportResult:
        created = skipped = 0
        held_before = len(held_back)
        disagreeing: list[int] = []
        # rows whose two answers are one text first: not even their prompt is stored (it would join the train split)
        # by the row itself, not its line: the rows of a JSON array written on one line all start on line 1, and
        # keyed by line they took each other's answers (a last row of one text twice dropped every row)
        texts = {id(r): make.texts(r) for r in chunk}
        same = tuple(r.line for r in chunk if texts[id(r)][0] == texts[id(r)][1])
        chunk = [r for r in chunk if texts[id(r)][0] != texts[id(r)][1]]
        hashes = [_hash(r.prompt) for r in chunk]
        # the prompts as stored once this chunk's are: an eval prompt is found, never made (nor one another import
        # made an eval prompt since this chunk began: read after the insert, it is set aside all the same)
        prompts, _ = _prompts_by_hash([r.prompt for r in chunk], split=Prompt.TRAIN, tag="", source=source,
                                      hashes=hashes)
        evals = {h for h, prompt in prompts.items() if prompt.split == Prompt.EVAL}
        set_aside = tuple(r.line for r, h in zip(chunk, hashes, strict=True) if h in evals)
        kept = [(r, h, *texts[id(r)]) for r, h in zip(chunk, hashes, strict=True) if h not in evals]
        _lock_prompts([p for h, p in prompts.items() if h not in evals])
        seen, keys = _existing_pairs([h for h in prompts if h not in evals])

        def find(row, prompt_hash: str, a: str, b: str) -> tuple[int | None, bool]:
            found = _exported_pair(row, keys, prompt_hash, a, b)
            return found if found[0] is not None else _find(seen, prompt_hash, a, b)

        onto = None
        if hasattr(make, "onto"):  # what a row adds to a pair that is already there (either way round), if anything
            stored = {found for r, h, a, b in kept if (found := find(r, h, a, b)[0]) is not None}
            onto = make.onto(stored)
        for row, prompt_hash, a, b in kept:
            if onto is not None:
                found, as_stored = find(row, prompt_hash, a, b)
            else:  # a pair import adds the same two answers the other way round as a pair of its own
                found, as_stored = seen.get((prompt_hash, a, b)), True
            if found is None:
                seen[(prompt_hash, a, b)] = make(new, prompts[prompt_hash], row)
                outcome = ADDED
            else:
                outcome = onto(found, row, source, as_stored) if onto is not None else PRESENT
            if outcome == ADDED:
                created += 1
            elif outcome == DISAGREES:
                disagreeing.append(row.line)
            else:
                skipped += 1
            if progress:
                progress(1)
        new.flush()
        if progress and (set_aside or same):
            progress(len(set_aside) + len(same))
        return ImportResult(created, skipped, set_aside, tuple(disagreeing), same, tuple(held_back[held_before:]))

    return _chunked(rows, write, should_stop, on_read, on_chunk)


def import_pairs(
    path: Path | str, *, round_number: int | None = None, labels_needed: int | None = None, name: str | None = None,
    progress: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
    on_read: Callable[[int], None] | None = None, new_rounds: bool = True,
    on_chunk: Callable[[ImportResult, int], None] | None = None,
    on_reading: Callable[[int, int, str], None] | None = None,
) -> ImportResult:
    """Unlabelled pairs (prompt, response_a, response_b) that join the labelling queue; a pair whose two answers are
    nearly the same is stored held back (route "duplicate"), as a generation job holds back its own: people could
    only tie it, and it is neither served nor trained on. `new_rounds`: whether `round_number` may name a round
    that is not there yet (made with its default settings); False for a caller who may not add rounds."""
    _check_round(round_number)
    _check_new_round(round_number, new_rounds)
    closed = round_number is not None and LabellingRound.objects.filter(
        number=round_number, closed_at__isnull=False).first()
    if closed:  # its pairs would wait for labels no one is given
        raise ImportProblem([f"round {round_number}: its labelling closed ({closed.closed_reason}), so no one would "
                             "be given these pairs: import them into an open round"])
    if labels_needed is not None and not 1 <= labels_needed <= MAX_LABELS_NEEDED:
        raise ImportProblem([f"labels needed {labels_needed}: expected 1 to {MAX_LABELS_NEEDED}"])
    name = name or Path(path).name
    rows = _read(lambda watch: formats.read_pairs(path, name, _limits(), watch), on_reading, should_stop)

    round_ = None

    def make(new: _NewPairs, prompt, row) -> int:
        nonlocal round_
        round_ = round_ or _round(round_number)
        needed = labels_needed or (round_.labels_per_pair if round_ else 1)
        route = Route.NONE
        if near_duplicate(row.response_a, row.response_b):
            route = Route.DUPLICATE
            make.held_back.append(row.line)
        return new.add(prompt, row.response_a, row.response_b, round_=round_, labels_needed=needed, route=route)

    make.texts = lambda row: (row.response_a, row.response_b)
    make.held_back = []
    return _write_pairs(rows, name, make, progress, should_stop, on_read, on_chunk)


def _choice(row, chosen_is_a: bool) -> str:
    """The label a preference row records on a pair holding its answers as A and B (or the other way round)."""
    return TIE if row.is_tie else (A if chosen_is_a else B)


def import_account():
    """The account that owns imported labels: marked as such in its AnnotatorProfile, with no password (no one signs
    in as it). Found by that mark, never by its name alone: a person's account named "import" was taken for it, their
    own labels then counted as imported and were set against the file's. When a person holds the name, the account
    is IMPORT_FALLBACK_ACCOUNT, a name the username rules refuse to people."""
    users = get_user_model().objects
    # a marked account that signs in is a person's (taken by an earlier version, or given a password since): unmark
    # it, or its owner's labels count as imported (annotate.rounds) and are set against the files' rows
    people_marked().update(is_import=False)
    marked = AnnotatorProfile.objects.filter(is_import=True).select_related("user").order_by("pk").first()
    if marked is not None:  # every account still marked has no password
        return marked.user
    for name in (IMPORT_ACCOUNT, IMPORT_FALLBACK_ACCOUNT):
        user, created = users.get_or_create(username=name, defaults={"password": make_password(None)})
        if created or (not user.has_usable_password() and not _is_someone(user)):
            break
    else:
        raise ImportProblem([f"accounts named {IMPORT_ACCOUNT!r} and {IMPORT_FALLBACK_ACCOUNT!r} are people's: "
                             "rename one, so imported labels have an account of their own"])
    AnnotatorProfile.objects.update_or_create(user=user, defaults={"is_import": True})
    return user


def _is_someone(user) -> bool:
    """Whether an account without a password is in use as someone else's: a judge's, or one that signs in some other
    way (staff, or labels of its own)."""
    profile = AnnotatorProfile.objects.filter(user=user).first()
    if profile and profile.is_import:  # marked by an import running beside this one: the labels are imported ones
        return False
    return bool(user.is_staff or (profile and profile.is_automatic) or Label.objects.filter(annotator=user).exists())


def people_marked():
    """Profiles marked as the import account whose user has a usable password: a person's (the import account has
    none); migration annotate/0011 clears the same on an upgrade."""
    return AnnotatorProfile.objects.filter(is_import=True).exclude(user__password__startswith=UNUSABLE_PASSWORD_PREFIX)


STOPPED = "stop"  # the finish reason both backends give an answer that ended by itself (generation/backends/base.py)


@dataclass(frozen=True)
class _Marks:
    """What an export's row says besides the pair and its label (annotate/exporters.py): whether each answer was cut
    off at the token limit, and its labels' comments. None: the row does not say (another data set's row)."""

    chosen_cut: bool | None = None
    rejected_cut: bool | None = None
    comments: tuple[str, ...] | None = None

    def finish(self, chosen_is_a: bool) -> tuple[str, str]:
        """The finish reasons of answers A and B, as stored: "" where the row does not say."""
        reasons = tuple("" if cut is None else (LENGTH_LIMIT if cut else STOPPED)
                        for cut in (self.chosen_cut, self.rejected_cut))
        return reasons if chosen_is_a else reasons[::-1]


_NO_MARKS = _Marks()


def _flag(row: dict, field: str) -> bool | None:
    """A true/false column: a boolean (JSON, Parquet), or the text true or false (a CSV cell); None when missing or
    empty."""
    value = row.get(field)
    if isinstance(value, str):
        if not value.strip():
            return None
        if value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    if value is None or isinstance(value, bool):
        return value
    raise formats.RowError(field, f"expected true or false, got {str(value)[:40]!r}")


def _cut_marks(row: dict) -> tuple[bool | None, bool | None]:
    """Whether the chosen and the rejected answer were cut off at the token limit, from the export's `truncated`
    (either of them), `chosen_truncated` and `rejected_truncated`: checked against each other, so a row that
    contradicts itself is refused rather than half believed."""
    either, chosen, rejected = (_flag(row, f) for f in ("truncated", "chosen_truncated", "rejected_truncated"))
    if either is False:
        for field, cut in (("chosen_truncated", chosen), ("rejected_truncated", rejected)):
            if cut:
                raise formats.RowError(field, "true, but 'truncated' (either answer cut off) is false")
        return False, False
    if either:
        if chosen is None and rejected is None:  # a cut answer never beats a finished one: which it is matters
            raise formats.RowError("truncated", "true, but which answer was cut off is not said: give "
                                                "'chosen_truncated' and 'rejected_truncated' too (the export does)")
        if chosen is False and rejected is False:
            raise formats.RowError("truncated", "true, but 'chosen_truncated' and 'rejected_truncated' are both false")
        # the one side not given is the cut one when the other was not cut
        chosen = True if chosen is None and rejected is False else chosen
        rejected = True if rejected is None and chosen is False else rejected
    return chosen, rejected


def _comments(row: dict) -> tuple[str, ...] | None:
    """The `comments` column: a list of texts (a CSV cell holds it as JSON text, or is one comment); None when there
    is no such column. Empty comments are left out, as the export leaves them out."""
    value = row.get("comments")
    if isinstance(value, str):
        text = value.strip()
        value = [text] if text else []
        if text.startswith("["):  # a list written as JSON text, or a comment that starts with "[" ("[sic] ...")
            try:
                listed = formats.json_value(text)
            except ValueError:  # not JSON: the one comment it reads as (it refused the whole file)
                listed = None
            if isinstance(listed, list) and all(isinstance(comment, str) for comment in listed):
                value = listed
    if value is None:
        return None
    if not isinstance(value, list):
        raise formats.RowError("comments", f"expected a list of comments (texts), got {type(value).__name__}")
    for i, comment in enumerate(value, 1):
        if not isinstance(comment, str):
            raise formats.RowError("comments", f"comment {i}: expected text, got {type(comment).__name__}")
        formats.check_text(comment, f"comments: comment {i}")
    return tuple(comment for comment in value if comment.strip())


def _marks(row: dict) -> _Marks:
    chosen, rejected = _cut_marks(row)
    return _Marks(chosen, rejected, _comments(row))


def _mark_answers(pair: Pair, marks: _Marks, chosen_is_a: bool) -> None:
    """A row's cut-off marks onto the answers of a pair stored before, where their finish reason is unknown (stored
    by an import): a sampled answer's own, from its model, is never replaced."""
    for response_id, reason in zip((pair.response_a_id, pair.response_b_id), marks.finish(chosen_is_a), strict=True):
        if reason:
            Response.objects.filter(pk=response_id, finish_reason="").update(finish_reason=reason)


def import_preferences(
    path: Path | str, *, fmt: str = "auto", round_number: int | None = None, name: str | None = None,
    progress: Callable[[int], None] | None = None, should_stop: Callable[[], bool] | None = None,
    on_read: Callable[[int], None] | None = None, new_rounds: bool = True,
    on_chunk: Callable[[ImportResult, int], None] | None = None,
    on_reading: Callable[[int, int, str], None] | None = None,
) -> ImportResult:
    """Labelled pairs: the chosen response is stored as A, the rejected as B, with a label by the import account. A
    new pair goes to `round_number`, or, when that is None, to the row's own `round` (as the export writes it).
    `new_rounds`: whether those may name rounds that are not there yet (made with their default settings); False
    for a caller who may not add rounds, where a row naming one is refused with its line, before anything is stored.

    What an export writes of a row besides (annotate/exporters.py) is read back too, where the row says it: which
    answer was cut off at the token limit (`chosen_truncated`, `rejected_truncated`, `truncated`) as the answers'
    finish reasons, which the cut rule and rule_penalty read, and the labels' `comments` as the label's comment
    (in place of where it was imported from), so an export imported into an empty instance exports the same rows:
    the same pairs, choices, probabilities, rounds and cut flags. A row's labels come back as one label (the import
    account's), so several comments on a pair come back as one, joined by a blank line.
    """
    _check_round(round_number)
    _check_new_round(round_number, new_rounds)
    name = name or Path(path).name
    existing = None if new_rounds else set(LabellingRound.objects.values_list("number", flat=True))
    # id(parsed row) -> what the row says of its answers and labels: by the row, not its line (a one-line JSON array's
    # rows share line 1, and one row's comments landed on another's label); the rows live as long as the import
    marks: dict[int, _Marks] = {}

    def read_marks(parsed, row: dict):
        if existing is not None and parsed.round is not None and parsed.round not in existing:
            raise formats.RowError("round", _no_new_round(parsed.round))
        found = _marks(row)
        if found != _NO_MARKS:
            marks[id(parsed)] = found
        return parsed

    rows = _read(lambda watch: formats.read_preferences(path, fmt, name, _limits(), own_round=round_number is None,
                                                        also=read_marks, watch=watch), on_reading, should_stop)

    labelled: dict[int, str] = {}  # pair id -> the import account's choice on it, as far as this import knows
    rounds: dict[int | None, LabellingRound | None] = {}

    def make(new: _NewPairs, prompt, row) -> int:
        # the round the import names; else the row's own (an export's rows say theirs), made if it is new
        number = round_number if round_number is not None else row.round
        if number not in rounds:
            rounds[number] = _round(number)
        label = _label_fields(row, new.source, chosen_is_a=True)
        pair_id = new.add(prompt, row.chosen, row.rejected, round_=rounds[number], label=label, labels_needed=1,
                          labels_done=1, finish=marks.get(id(row), _NO_MARKS).finish(chosen_is_a=True))
        labelled[pair_id] = label["choice"]
        return pair_id

    def _label_fields(row, source, *, chosen_is_a: bool) -> dict:
        said = marks.get(id(row), _NO_MARKS).comments
        # the row's own comments where it has the column (an export's: none is an empty list); else where it came from
        comment = f"imported from {source[len('import:'):]} line {row.line}" if said is None else "\n\n".join(said)
        return dict(annotator=user, choice=_choice(row, chosen_is_a), left_is_a=True,
                    side="tie" if row.is_tie else ("left" if chosen_is_a else "right"),
                    preference_prob=None if row.is_tie else row.preference_prob, comment=comment)

    def _label(pair, row, source, *, chosen_is_a: bool) -> str:
        return Label.objects.create(pair=pair, **_label_fields(row, source, chosen_is_a=chosen_is_a)).choice

    def onto_pairs(pair_ids):
        """A preference on a pair already here (pushed unlabelled, or labelled by people) is recorded on it as the
        import account's label, once: pushed again, it is already present, or disagrees with the label kept. Which of
        the push's pairs are gold or labelled by the import already is two queries, so pushing a file again costs no
        query a row. The pairs it may label are locked at once, in id order (models.lock_pairs)."""
        ids = list(pair_ids)
        labelled.update(Label.objects.filter(pair__in=ids, annotator=user).values_list("pair_id", "choice"))
        # locked before gold is read: a pair made gold meanwhile is seen as gold, not labelled by the import
        lock_pairs(Pair.objects.filter(pk__in=[i for i in ids if i not in labelled]))
        gold = set(Pair.objects.filter(pk__in=ids, is_gold=True).values_list("pk", flat=True))
        labellers: dict[int, set[int]] = {}  # pair id -> who labelled it here: an export's row names its labellers
        for pair_id, annotator_id in Label.objects.filter(pair__in=ids).values_list("pair_id", "annotator_id"):
            labellers.setdefault(pair_id, set()).add(annotator_id)
        named = list(labellers)  # the labelled ones, whose decision an export's row may name
        stored_pairs = Pair.objects.select_related("response_a", "response_b").only(
            "is_gold", "gold_choice", "route", "response_a__id", "response_b__id").in_bulk(named)
        stored_labels: dict[int, list[Label]] = {}
        # in the export's order (annotate.dataset.decisions): a soft-label sum at exactly one half reads the same
        for label in Label.objects.filter(pair__in=named).order_by("created", "pk").only(
                "pair_id", "annotator_id", "choice", "preference_prob", "is_automatic"):
            stored_labels.setdefault(label.pair_id, []).append(label)

        def decided_here(pair_id: int, row) -> set[str]:
            """What its named labellers' labels decide on the pair, by strength or soft labels (the export's two
            ways): an export read back says one of them, an edited one (the answers swapped) neither."""
            theirs = [label for label in stored_labels.get(pair_id, []) if label.annotator_id in row.exported_labellers]
            pair = stored_pairs[pair_id]
            ways = (decide(pair, theirs, soft_labels=soft) for soft in (False, True))
            return {A if d.chosen.pk == pair.response_a_id else B for d in ways if d is not None}

        def onto(pair_id, row, source, chosen_is_a: bool) -> str:
            if pair_id in gold:
                return PRESENT
            if (row.exported_pair == pair_id and pair_id not in labelled and row.exported_labellers
                    and set(row.exported_labellers) <= labellers.get(pair_id, set())):
                # this instance's own export of the pair read back: the row sums up labels stored here already (its
                # labellers' labels are on the pair), and adding it as the import's label counted each of them twice.
                # Another instance's export whose pair ids match ours (both seeded from one pairs file) names
                # labels that are not here: it was dropped as "already present", and its labels were lost. A row
                # that says the other answer (edited, or another instance's whose labeller ids match ours) is not the
                # same preference: it disagrees, and is said, where it was dropped as "already present"
                return PRESENT if _choice(row, chosen_is_a) in decided_here(pair_id, row) else DISAGREES
            if pair_id not in labelled:
                # locked, and looked at again: an import of the same rows committed meanwhile has labelled it
                pair = Pair.objects.select_for_update(no_key=True).get(pk=pair_id)
                earlier = Label.objects.filter(pair=pair, annotator=user).values_list("choice", flat=True).first()
                if earlier is None:
                    labelled[pair_id] = _label(pair, row, source, chosen_is_a=chosen_is_a)
                    # a pair held back as a near-duplicate (pushed unlabelled before) is released: a labelled row
                    # says its answers differ to whoever labelled it, as a labelled near-duplicate row imported new
                    # is never held back; held, the label was counted "added" and never trained or exported
                    Pair.objects.filter(pk=pair.pk).update(
                        labels_done=F("labels_done") + 1,
                        route=Case(When(route=Route.DUPLICATE, then=Value(Route.NONE)), default=F("route")))
                    _mark_answers(pair, marks.get(id(row), _NO_MARKS), chosen_is_a)
                    return ADDED
                labelled[pair_id] = earlier
            return PRESENT if labelled[pair_id] == _choice(row, chosen_is_a) else DISAGREES

        return onto

    make.texts = lambda row: (row.chosen, row.rejected)
    make.onto = onto_pairs
    user = import_account()
    return _write_pairs(rows, name, make, progress, should_stop, on_read, on_chunk)
