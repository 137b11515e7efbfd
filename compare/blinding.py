"""Keeping blind votes blind when comparison sets share answers.

Answers are reused: two sets of the same versions, seed and token limit show the same answers
(generation.services.answers_for), and a regenerated answer can be word for word the same. A vote on a blind
comparison is blind only if the voter has not seen its answers named before voting: in a side-by-side set, or in the
reveal after their vote on another comparison holding the same answer. So, for each person:

- a side-by-side set opens only once they have voted on every blind comparison (that they can still vote on blind)
  holding one of its answers; until then the page says which blind sets to finish;
- a blind comparison is not served to them, and their vote on it is refused, when one of its answers was shown by
  name before it existed (in an older side-by-side set: anyone may have seen it) or was revealed to them after a
  vote on another comparison.

An answer is its prompt and its text, so the same text stored twice is one answer (`answer_of`). The gate
(training.promotion) and the leaderboard count a voter's verdict once per pair of answers by the same rule.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from generation.models import Response

from .models import CompareJob, Comparison, Vote

Answer = tuple[int, str]  # (prompt id, digest of the text)
_IDS_PER_QUERY = 500  # answers' texts read this many at a time: a long list of ids is past some databases' limit


def text_digest(text: str) -> str:
    # surrogatepass: a stored text with a lone surrogate (a model's broken output) still has a digest
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def answer_of(response: Response) -> Answer:
    """The answer a response is: its prompt and its text. Another row with the same words (greedy sampling at
    another seed, another token limit the answer ended before) is the same answer."""
    return response.prompt_id, text_digest(response.text)


def answers_of(response_ids) -> dict[int, Answer]:
    """`answer_of` each of these responses, by id; each text is read once, however many votes name it."""
    ids = sorted(set(response_ids))
    found: dict[int, Answer] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        rows = Response.objects.filter(pk__in=ids[start:start + _IDS_PER_QUERY]).values_list("pk", "prompt_id", "text")
        found.update((pk, (prompt_id, text_digest(text))) for pk, prompt_id, text in rows)
    return found


@dataclass(frozen=True)
class _Row:
    pk: int
    job_id: int | None
    blind: bool  # a comparison outside any set counts as blind: it is voted on
    answers: frozenset[Answer]  # both answers (one when their texts are the same)
    order: tuple  # (created, pk): which comparison existed first


class _Sharing:
    """Every comparison on some prompts, with its answers, and what one person has voted on among them."""

    def __init__(self, prompt_ids, user):
        rows = list(
            Comparison.objects.filter(prompt_id__in=list(prompt_ids))
            .values_list("pk", "job_id", "job__blind", "response_a_id", "response_b_id", "created")
        )
        answers = answers_of({r[3] for r in rows} | {r[4] for r in rows})
        self.rows = {
            pk: _Row(pk, job_id, blind is not False, frozenset({answers[a], answers[b]}), (created, pk))
            for pk, job_id, blind, a, b, created in rows
        }
        self.by_answer: dict[Answer, list[_Row]] = {}
        for row in self.rows.values():
            for answer in row.answers:
                self.by_answer.setdefault(answer, []).append(row)
        self.voted = set(Vote.objects.filter(voter=user, comparison_id__in=list(self.rows))
                         .values_list("comparison_id", flat=True))

    def _sharing(self, row: _Row) -> list[_Row]:
        """The other comparisons holding one of this one's answers."""
        found = {other.pk: other for answer in row.answers for other in self.by_answer[answer] if other.pk != row.pk}
        return list(found.values())

    def why_not_blind(self, pk: int) -> str | None:
        """Why this person cannot vote blind on a comparison they have not voted on; None when they can."""
        row = self.rows[pk]
        for other in self._sharing(row):
            if not other.blind and other.order < row.order:
                return f"its answers were shown by name in side-by-side set {other.job_id} before it was made"
            if other.blind and other.pk in self.voted:
                where = f"set {other.job_id}" if other.job_id else f"comparison {other.pk}"
                return f"you saw its answers named after your vote in {where}"
        return None

    def pending_blind_sets(self, job: CompareJob) -> list[int | None]:
        """Blind sets holding answers of this side-by-side set that this person can still vote on blind."""
        pending = set()
        for row in (r for r in self.rows.values() if r.job_id == job.pk):
            for other in self._sharing(row):
                if other.blind and other.pk not in self.voted and self.why_not_blind(other.pk) is None:
                    pending.add(other.job_id)
        return sorted(pending, key=lambda j: (j is None, j))


def left_out(job: CompareJob, user) -> dict[int, str]:
    """The comparisons of a blind set this person has not voted on and cannot vote on blind, with the reason."""
    sharing = _Sharing(job.prompt_ids, user)
    return {pk: why for pk, row in sharing.rows.items() if row.job_id == job.pk and pk not in sharing.voted
            and (why := sharing.why_not_blind(pk))}


def why_not_blind(comparison: Comparison, user) -> str | None:
    """Why this person's vote on the comparison would not be blind (None: it would be, or they voted already)."""
    sharing = _Sharing([comparison.prompt_id], user)
    if comparison.pk in sharing.voted:
        return None
    return sharing.why_not_blind(comparison.pk)


def pending_blind_sets(job: CompareJob, user) -> list[int | None]:
    """For a side-by-side set: the blind sets this person must finish voting on before it opens to them."""
    if job.blind:
        return []
    return _Sharing(job.prompt_ids, user).pending_blind_sets(job)
