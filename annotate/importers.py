"""Import prompts, unlabelled pairs and labelled preferences from files, all or nothing.

Every row is checked first (annotate.formats); only then is anything written, in one transaction. Rows already in
the database (same normalised prompt, same responses) are skipped, so importing a file twice adds nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from generation.models import Prompt, Response, normalised_hash

from . import formats
from .formats import ImportProblem, PromptRow  # noqa: F401  (callers catch ImportProblem from here)
from .models import TIE, A, AnnotatorProfile, Label, Pair, Round

IMPORT_ACCOUNT = "import"


@dataclass(frozen=True)
class ImportResult:
    created: int
    skipped: int

    def __str__(self) -> str:
        return f"{self.created} added, {self.skipped} already present"


def _hash(row: PromptRow) -> str:
    return normalised_hash(row.messages or row.text)


def _prompts_by_hash(rows: Iterable[PromptRow], *, split: str, tag: str, source: str) -> tuple[dict[str, Prompt], int]:
    """Existing or new Prompt rows for these prompts, keyed by hash; also how many were created."""
    wanted = {_hash(r): r for r in rows}
    found = {p.hash: p for p in Prompt.objects.filter(hash__in=list(wanted))}
    new = [
        Prompt(text=r.text, messages=r.messages, split=split, tag=tag, source=source, hash=h)
        for h, r in wanted.items() if h not in found
    ]
    for prompt in Prompt.objects.bulk_create(new, batch_size=500):
        found[prompt.hash] = prompt
    if any(p.pk is None for p in found.values()):  # backends that return no ids from bulk_create
        found = {p.hash: p for p in Prompt.objects.filter(hash__in=list(wanted))}
    return found, len(new)


def import_prompts(path: Path | str, *, split: str = Prompt.TRAIN, tag: str = "", name: str | None = None) -> ImportResult:
    """Prompts from a file with a `prompt` column (text or a message list)."""
    if split not in (Prompt.TRAIN, Prompt.EVAL):
        raise ImportProblem([f"unknown split {split!r}: expected train or eval"])
    name = name or Path(path).name
    rows = formats.read_prompts(path, name)
    with transaction.atomic():
        _, created = _prompts_by_hash(rows, split=split, tag=tag, source=f"import:{name}")
    return ImportResult(created, len(rows) - created)


def _round(number: int | None) -> Round | None:
    if number is None:
        return None
    round_, _ = Round.objects.get_or_create(number=number)
    return round_


def _existing_pairs(hashes: list[str]) -> set[tuple[str, str, str]]:
    return set(
        Pair.objects.filter(prompt__hash__in=hashes).values_list("prompt__hash", "response_a__text", "response_b__text")
    )


def _new_pair(prompt: Prompt, text_a: str, text_b: str, *, source: str, round_: Round | None, **fields) -> Pair:
    response_a = Response.objects.create(prompt=prompt, version=None, text=text_a, source=source)
    response_b = Response.objects.create(prompt=prompt, version=None, text=text_b, source=source)
    return Pair.objects.create(
        prompt=prompt, response_a=response_a, response_b=response_b, origin=Pair.IMPORTED, round=round_, **fields
    )


def _write_pairs(rows, name, make, progress: Callable[[int], None] | None) -> ImportResult:
    source = f"import:{name}"
    created = skipped = 0
    with transaction.atomic():
        prompts, _ = _prompts_by_hash([r.prompt for r in rows], split=Prompt.TRAIN, tag="", source=source)
        seen = _existing_pairs(list(prompts))
        for row in rows:
            key = (_hash(row.prompt), *make.texts(row))
            if key in seen:
                skipped += 1
            else:
                seen.add(key)
                make(prompts[key[0]], row, source)
                created += 1
            if progress:
                progress(1)
    return ImportResult(created, skipped)


def import_pairs(
    path: Path | str, *, round_number: int | None = None, labels_needed: int | None = None, name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Unlabelled pairs (prompt, response_a, response_b) that join the labelling queue."""
    name = name or Path(path).name
    rows = formats.read_pairs(path, name)

    def make(prompt, row, source):
        round_ = _round(round_number)
        needed = labels_needed or (round_.labels_per_pair if round_ else 1)
        _new_pair(prompt, row.response_a, row.response_b, source=source, round_=round_, labels_needed=needed)

    make.texts = lambda row: (row.response_a, row.response_b)
    return _write_pairs(rows, name, make, progress)


def import_account():
    """The account that owns imported labels, marked as such in its AnnotatorProfile."""
    user, created = get_user_model().objects.get_or_create(username=IMPORT_ACCOUNT)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    AnnotatorProfile.objects.update_or_create(user=user, defaults={"is_import": True})
    return user


def import_preferences(
    path: Path | str, *, fmt: str = "auto", round_number: int | None = None, name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Labelled pairs: the chosen response is stored as A, the rejected as B, with a label by the import account."""
    name = name or Path(path).name
    rows = formats.read_preferences(path, fmt, name)

    def make(prompt, row, source):
        pair = _new_pair(
            prompt, row.chosen, row.rejected, source=source, round_=_round(round_number), labels_needed=1,
            labels_done=1,
        )
        choice = TIE if row.is_tie else A
        Label.objects.create(
            pair=pair, annotator=user, choice=choice, side="tie" if row.is_tie else "left", left_is_a=True,
            preference_prob=None if row.is_tie else row.preference_prob, comment=f"imported from {name} line {row.line}",
        )

    make.texts = lambda row: (row.chosen, row.rejected)
    with transaction.atomic():
        user = import_account()
        return _write_pairs(rows, name, make, progress)
