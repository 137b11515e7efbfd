"""Data in and out: push prompts, unlabelled pairs and labelled preferences (the import page's parsers and its
checks of every row before any is written), pull the decided preferences in TRL's format (the export page's rows and filters), paged."""
from __future__ import annotations

import bisect
import json
import logging
import tempfile
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field

from annotate import exporters, importers
from annotate.dataset import decisions
from annotate.models import LabellingRound
from prefcore.rows import FORMATS
from prefloop.access import may

from .auth import STAFF, staff
from .fields import Body, Count, Fraction, Name, Number

log = logging.getLogger(__name__)
router = Router(tags=["data"])
MAX_PAGE_SIZE = 1000
SOURCE = "api"  # how import problems name the rows: "api: line 3: ..." is the request's third row


class PushResult(Schema):
    created: int
    skipped: int
    set_aside: list[int] = Field(description="Rows (1-based) left out because their prompt is an eval prompt.")
    disagreeing: list[int] = Field(
        description="Rows (1-based) not added because they prefer the other answer (or a tie) of a pair already "
                    "labelled by an import, in this push or before; the stored label is kept.")
    same_answers: list[int] = Field(
        default_factory=list, description="Rows (1-based) not added because both answers are the same text: a pair "
                                          "that can only tie teaches nothing.")
    held_back: list[int] = Field(
        default_factory=list, description="Rows (1-based) added but held back from people: their two answers are "
                                          "nearly the same, so people could only tie them (unlabelled pairs only).")


class PromptPush(Body):
    rows: list[Any] = Field(description="Objects with a `prompt` field (text or a message list).")
    split: Literal["train", "eval"] = "train"
    tag: Name = ""


class PairPush(Body):
    rows: list[Any] = Field(description="Objects with prompt, response_a and response_b.")
    round: Number | None = None
    labels_needed: Count(1, importers.MAX_LABELS_NEEDED) | None = None


class PreferencePush(Body):
    rows: list[Any] = Field(description="Labelled preferences in any format the import page reads.")
    format: Literal[FORMATS] = "auto"  # type: ignore[valid-type]
    round: Number | None = None


def _settings_in_rows(rows: list[Any], names: tuple[str, ...]) -> None:
    """Refuse rows that carry a setting of the whole request (a pair push's round, a prompt push's tag): it was
    dropped without a word, and the rows went where the request said, or nowhere it named."""
    problems = [f"{SOURCE}: line {i}: {name}: set for the whole request (the body's \"{name}\"), not per row"
                for i, row in enumerate(rows, 1) if isinstance(row, dict) for name in names if name in row]
    if problems:
        raise importers.ImportProblem(problems)


def _imported(rows: list[Any], call) -> PushResult:
    """Hand the rows to the importer as the file the import page would have saved: JSON Lines, the Nth row on line
    N (ASCII, so no character of a text ends a line), so a refusal's line names the row."""
    problems = [f"{SOURCE}: line {i}: expected a JSON object with named fields"
                for i, row in enumerate(rows, 1) if not isinstance(row, dict)]
    if problems:  # a row that is a list was read as a JSON array of rows: one row stored as several
        raise importers.ImportProblem(problems)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", encoding="utf-8") as tmp:
        tmp.writelines(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)
        tmp.flush()
        try:
            result = call(tmp.name)
        except importers.ImportStopped as stopped:  # the database failed part-way: the rows stored are said
            log.error("a push failed part-way", exc_info=stopped.error)
            raise HttpError(503, str(stopped)) from None
    return PushResult(created=result.created, skipped=result.skipped, set_aside=list(result.set_aside),
                      disagreeing=list(result.disagreeing), same_answers=list(result.same_answers),
                      held_back=list(result.held_back))


@router.post("/prompts", auth=staff("generation.add_prompt"), response={201: PushResult}, summary="Push prompts")
def push_prompts(request: HttpRequest, payload: PromptPush):
    _settings_in_rows(payload.rows, ("split", "tag"))
    return Status(201, _imported(payload.rows, lambda path: importers.import_prompts(
        path, split=payload.split, tag=payload.tag, name=SOURCE)))


@router.post("/pairs", auth=staff("annotate.add_pair"), response={201: PushResult}, summary="Push unlabelled pairs")
def push_pairs(request: HttpRequest, payload: PairPush):
    _settings_in_rows(payload.rows, ("round", "labels_needed"))
    return Status(201, _imported(payload.rows, lambda path: importers.import_pairs(
        path, round_number=payload.round, labels_needed=payload.labels_needed, name=SOURCE,
        new_rounds=may(request.user, importers.NEW_ROUND_PERMISSION))))


@router.post("/preferences", auth=staff("annotate.add_label"), response={201: PushResult}, summary="Push labelled preferences")
def push_preferences(request: HttpRequest, payload: PreferencePush):
    return Status(201, _imported(payload.rows, lambda path: importers.import_preferences(
        path, fmt=payload.format, round_number=payload.round, name=SOURCE,
        new_rounds=may(request.user, importers.NEW_ROUND_PERMISSION))))


class PreferenceFilters(Schema):
    round: Number | None = Field(None, description="Only this labelling round.")
    min_agreement: Fraction | None = None
    include_automatic: bool = True
    soft_labels: bool = False
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(100, ge=1, le=MAX_PAGE_SIZE)
    conversational: bool | None = Field(None, description=(
        "Rows as message lists (true) or text (false). By default, message lists when any decided prompt is a chat, "
        "which a chat prompt labelled between two pages changes: pass the first page's `conversational` with the "
        "pages after it, so every row has one shape."))
    after: int | None = Field(None, ge=0, le=2**63 - 1, description=(
        "The rows after this pair id (the `next_after` of the page before): pages that hold however labels change "
        "meanwhile, but a pair behind it decided meanwhile comes in the next pull, not this one. `page` counts rows "
        "from the start, so an undo or a new label before it shifts what it holds."))


class PreferencePage(Schema):
    count: int
    page: int
    page_size: int
    next_page: int | None
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last one.")
    conversational: bool = Field(description="Whether the rows are message lists: pass it with the next page.")
    results: list[dict[str, Any]]


def _more_than_text(prompt) -> bool:
    """Whether a text row would drop part of the prompt: a conversation beyond one user turn (a system message,
    earlier turns), or one turn whose words are not the prompt's text."""
    messages = prompt.messages
    if not messages:
        return False
    return not (len(messages) == 1 and messages[0].get("role") == "user" and messages[0].get("content") == prompt.text)


@router.get("/preferences", auth=STAFF, response=PreferencePage, summary="Pull decided preferences (TRL format)")
def pull_preferences(request: HttpRequest, filters: Query[PreferenceFilters]):
    """The rows the export page writes, in the same order, with the same filters; one page at a time."""
    # a round no one made is a typo, not an empty data set (the export page refuses it too: RoundForm)
    if filters.round is not None and not LabellingRound.objects.filter(number=filters.round).exists():
        raise HttpError(404, f"round: no labelling round {filters.round}")
    decided = decisions(rounds=None if filters.round is None else [filters.round],
                        min_agreement=filters.min_agreement, include_automatic=filters.include_automatic,
                        soft_labels=filters.soft_labels, same_answers=False)
    if filters.after is not None:
        if filters.page != 1:
            raise HttpError(400, "page and after: pass one of them (after: the `next_after` of the page before)")
        start = bisect.bisect_right([d.pair.pk for d in decided], filters.after)  # decisions(): in pair id order
    else:
        start = (filters.page - 1) * filters.page_size
    end = start + filters.page_size
    more = end < len(decided)
    # whether rows are conversational is decided for all of them at once (or as the first page said)
    conversational = (exporters.is_conversational(decided) if filters.conversational is None
                      else filters.conversational)
    chat = next((d.pair.pk for d in decided[start:end] if _more_than_text(d.pair.prompt)), None)
    if not conversational and chat is not None:
        # a text row holds the last user turn alone: a conversation's system message and earlier turns were dropped
        # without a word (and the row, read back, made another prompt and pair, counted twice)
        raise HttpError(409, f"conversational=false: pair {chat}'s prompt is a conversation, which a text row cannot "
                             "hold (its earlier turns would be dropped): pull again from the start, without "
                             "conversational, and every row comes as message lists")
    return {"count": len(decided), "page": filters.page, "page_size": filters.page_size,
            "next_page": filters.page + 1 if more and filters.after is None else None,
            "next_after": decided[end - 1].pair.pk if more else None, "conversational": conversational,
            "results": exporters.preference_rows(decided[start:end], conversational)}
