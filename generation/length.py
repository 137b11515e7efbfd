"""Answer length and cut-off facts, defined once: the mean-length function every page and report uses (over a set
of answers, or over all of a version's stored answers), and whether an answer stopped at the token limit
("truncated")."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

# The finish reason both backends give an answer stopped by max_new_tokens (generation/backends/base.py).
LENGTH_LIMIT = "length"


def is_truncated(finish_reason: str) -> bool:
    """True when the answer stopped at the token limit, not at its end-of-sequence token."""
    return finish_reason == LENGTH_LIMIT


def mean_tokens(responses: Iterable) -> float | None:
    """Mean `token_count` of the responses (sampled ids as stored, a finished answer's end-of-sequence token
    included); None for none."""
    counts = [r.token_count for r in responses]
    return sum(counts) / len(counts) if counts else None


def truncated_count(responses: Iterable) -> int:
    return sum(is_truncated(r.finish_reason) for r in responses)


@dataclass(frozen=True)
class VersionLength:
    """A version's answer length as every page shows it: the mean over all its stored answers, how many, how many
    stopped at the token limit."""

    mean: float | None
    answers: int
    truncated: int

    @property
    def label(self) -> str:
        if not self.answers:
            return "no answers yet"
        return f"mean over {self.answers} answers, {self.truncated} cut off at the token limit"


def version_lengths(version_ids: Iterable[int] | None = None) -> dict[int, VersionLength]:
    """One aggregate query: every (or the given) version's VersionLength, keyed by version id."""
    from django.db.models import Avg, Count, Q

    from .models import Response  # generation.models imports this module (is_truncated): the cycle is broken here

    rows = Response.objects.filter(version__isnull=False)
    if version_ids is not None:
        rows = rows.filter(version_id__in=list(version_ids))
    found = rows.values("version_id").annotate(mean=Avg("token_count"), n=Count("pk"),
                                               cut=Count("pk", filter=Q(finish_reason=LENGTH_LIMIT)))
    lengths = {r["version_id"]: VersionLength(r["mean"], r["n"], r["cut"]) for r in found}
    for pk in version_ids or ():
        lengths.setdefault(pk, VersionLength(None, 0, 0))
    return lengths


def version_length(version) -> VersionLength:
    return version_lengths([version.pk])[version.pk]


@dataclass(frozen=True)
class LengthGrowth:
    """How much longer a version's answers are than another's, on what both answered alike: the same prompts under
    the same sampling settings (the seed aside). Means over all stored answers mix what each version was asked (a
    parent sampled for labelling at 256 tokens, a child for evaluation at 128): identical answers read 131% longer."""

    growth: float | None  # mean over shared (prompt, settings) of the version's tokens / the other's, less 1
    prompts: int  # the shared (prompt, settings) groups it is measured on

    @property
    def label(self) -> str:
        if self.growth is None:
            return "no prompt answered by both under the same settings"
        return f"on {self.prompts} prompt{'s' * (self.prompts != 1)} both answered under the same settings"


# What does not change an answer: its seed (each prompt's own), and the batch it was sampled in, which answer reuse
# ignores too (generation.services.sampling_key): an answer reused at another batch size kept the one it was sampled
# with, and two versions answering alike read as answering under different settings ("no prompt answered by both")
NOT_SETTINGS = ("seed", "batch_size")


def _settings(params) -> str:
    return json.dumps({k: v for k, v in (params or {}).items() if k not in NOT_SETTINGS}, sort_keys=True, default=str)


def length_growth(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], LengthGrowth]:
    """For each (version id, other version id): LengthGrowth of the first over the second, read in one query. Each
    shared (prompt, settings) group counts once, by the mean of each version's answers in it (four samples of one
    prompt weigh as one evaluation answer), and the growth is the ratio of the summed group means."""
    from django.db.models import Count, Sum

    from .models import Response

    pairs = list(pairs)
    ids = {pk for pair in pairs for pk in pair}
    groups: dict[int, dict[tuple[int, str], list[int]]] = {pk: {} for pk in ids}  # -> [tokens, answers]
    # only the answers to prompts two of these versions answered count (a page load read every answer of every
    # version: hundreds of thousands of rows where jobs sample 100k prompts), summed in the database by prompt and
    # sampling settings: a row per job and prompt, not per answer
    shared = (Response.objects.filter(version_id__in=ids).values("prompt_id")
              .annotate(versions=Count("version_id", distinct=True)).filter(versions__gte=2).values("prompt_id"))
    rows = (Response.objects.filter(version_id__in=ids, prompt_id__in=shared)
            .values("version_id", "prompt_id", "sampling_params").order_by()
            .annotate(tokens=Sum("token_count"), answers=Count("pk"))
            .values_list("version_id", "prompt_id", "sampling_params", "tokens", "answers"))
    for version_id, prompt_id, params, tokens, answers in rows.iterator(chunk_size=2000):
        group = groups[version_id].setdefault((prompt_id, _settings(params)), [0, 0])  # seeds apart: one group
        group[0] += tokens
        group[1] += answers
    out = {}
    for mine, other in pairs:
        common = groups[mine].keys() & groups[other].keys()
        a = sum(groups[mine][k][0] / groups[mine][k][1] for k in common)
        b = sum(groups[other][k][0] / groups[other][k][1] for k in common)
        out[(mine, other)] = LengthGrowth(a / b - 1 if common and b > 0 else None, len(common))
    return out
