"""Preparing a labelling queue for its order: near-duplicate pairs held back from people, and each open pair's
implicit-reward margin under the current version scored from the cached log-probs.

The margin of a pair (a, b) under version pi against its base (the fixed DPO reference) is
beta * [(log pi(a) - log pi_ref(a)) - (log pi(b) - log pi_ref(b))]: > 0 means pi prefers a. Log-probs come from
training.models.ReferenceLogp (a version's log-prob of a response, whatever role it plays there), computed by the
trainer's own code for the responses missing and stored for the next round, measurement or training run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Q

from generation.models import ModelVersion
from generation.pairing import near_duplicate
from prefloop.numerics import product_dtype
from training.dataset import cache_key, store_reference_logps
from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair
from training.models import ReferenceLogp

from .models import Assignment, LabellingRound, Pair, QueueOrder, Route, lock_pairs, update_pairs

CHUNK_PAIRS = 64  # pairs scored per model call: progress and cancellation are looked at between chunks


class ScoringCancelled(Exception):
    """The job that asked for the scores was cancelled; the margins scored before stay."""


@dataclass
class Prepared:
    held_back: int  # near-duplicate pairs taken out of the queue
    scored: int  # pairs whose margin was (re)computed
    version: str


def margin_config(**overrides) -> DPOConfig:
    """The settings margins are scored with: the trainer's defaults (beta, max_length) in the product's dtype, so
    the log-probs cached here are the ones a training run in that dtype reuses."""
    return DPOConfig.from_dict({"batch_size": 8, "dtype": product_dtype(), **overrides})


def open_pairs(rounds: Iterable[LabellingRound] | None = None):
    """Regular pairs still short of labels, in open rounds (or the given rounds), not held back nor decided by a
    judge."""
    pairs = Pair.objects.filter(is_gold=False, labels_done__lt=F("labels_needed")).exclude(
        route__in=(Route.DUPLICATE, Route.JUDGE))
    if rounds is not None:
        return pairs.filter(round__in=list(rounds))
    return pairs.filter(Q(round__isnull=True) | Q(round__closed_at__isnull=True))


def hold_back_near_duplicates(pairs: Iterable[Pair]) -> int:
    """Mark the pairs whose two answers are the same or nearly so (generation.pairing.near_duplicate): people would
    only tie them. Their open leases end, as a closing ends a round's: a pair on someone's screen stayed there, and
    its label was taken and trained on. Returns how many were held back."""
    held = [p for p in pairs if p.route != Route.DUPLICATE and near_duplicate(p.response_a.text, p.response_b.text)]
    ids = [p.pk for p in held]
    with transaction.atomic():
        # the leases before the pairs, as close_round takes them: record_label locks a lease, then its pair
        Assignment.objects.filter(pair_id__in=ids, state=Assignment.LEASED).update(state=Assignment.EXPIRED)
        # in id order, as every writer of several pairs takes them (models.lock_pairs)
        update_pairs(Pair.objects.filter(pk__in=ids), route=Route.DUPLICATE)
    for pair in held:
        pair.route = Route.DUPLICATE
    return len(held)


def _cached(version: ModelVersion, response_ids: list[int], config: DPOConfig) -> dict[int, float]:
    return dict(ReferenceLogp.objects.filter(
        response_id__in=response_ids, reference=version, max_length=config.max_length, dtype=cache_key(config.dtype),
    ).values_list("response_id", "logp"))


def version_logps(version: ModelVersion, pairs: Sequence[Pair], config: DPOConfig) -> list[tuple[float, float]]:
    """log pi(answer | prompt) under `version` of each pair's two answers (a, b), in input order: cached values
    reused where both answers have one, the other pairs scored (one model load for all of them) and the values of
    those scored whole stored. Per pair, not per answer: a pair cut to max_length scores an answer on fewer tokens
    than the same answer beside a shorter partner (training.dataset.store_reference_logps)."""
    cached = _cached(version, [r for p in pairs for r in (p.response_a_id, p.response_b_id)], config)
    values = [(cached.get(p.response_a_id), cached.get(p.response_b_id)) for p in pairs]
    missing = [i for i, (a, b) in enumerate(values) if a is None or b is None]
    if missing:
        rows = [PreferencePair(prompt=pairs[i].prompt.as_input, chosen=pairs[i].response_a.text,
                               rejected=pairs[i].response_b.text, key=pairs[i].pk) for i in missing]
        from training.dpo.trainer import Scorer  # loads torch: only workers score margins

        scored, truncated = Scorer(version.path, config).scored(rows)
        store_reference_logps(version, config.max_length, config.dtype,
                              [(pairs[i].response_a, pairs[i].response_b) for i in missing], scored, truncated)
        for i, value in zip(missing, scored, strict=True):
            values[i] = value
    return values


def margins(pairs: Sequence[Pair], version: ModelVersion, config: DPOConfig) -> list[float]:
    """The implicit-reward margin of each pair under `version` against its base, in input order (0 for the base
    itself: a version is its own reference)."""
    reference = version.lineage()[0]
    if reference.pk == version.pk:
        return [0.0] * len(pairs)
    own, ref = version_logps(version, pairs, config), version_logps(reference, pairs, config)
    return [config.beta * ((own_a - ref_a) - (own_b - ref_b))
            for (own_a, own_b), (ref_a, ref_b) in zip(own, ref, strict=True)]


def score_margins(
    pairs: Sequence[Pair], version: ModelVersion, *, config: DPOConfig | None = None,
    progress: Callable[[int, int], None] | None = None, cancelled: Callable[[], bool] | None = None,
) -> int:
    """Score and store the margins of `pairs` under `version`, CHUNK_PAIRS at a time; returns how many were stored.
    Raises ScoringCancelled (between chunks) when `cancelled()` says so; what was stored stays."""
    config = config or margin_config()
    done = 0
    for start in range(0, len(pairs), CHUNK_PAIRS):
        if cancelled is not None and cancelled():
            raise ScoringCancelled(f"cancelled after scoring {done} of {len(pairs)} pairs")
        chunk = list(pairs[start:start + CHUNK_PAIRS])
        for pair, margin in zip(chunk, margins(chunk, version, config), strict=True):
            pair.margin, pair.margin_version = margin, version
        with transaction.atomic():  # in id order, as every writer of several pairs takes them
            lock_pairs(Pair.objects.filter(pk__in=[p.pk for p in chunk]))
            Pair.objects.bulk_update(chunk, ["margin", "margin_version"])
        done += len(chunk)
        if progress:
            progress(done, len(pairs))
    return done


def prepare_queue(
    version: ModelVersion, *, rounds: Iterable[LabellingRound] | None = None, config: DPOConfig | None = None,
    progress: Callable[[int, int], None] | None = None, cancelled: Callable[[], bool] | None = None,
) -> Prepared:
    """The one step that readies the open pairs (of the given rounds, or every open round) for people: near
    duplicates held back, then the margins of the pairs whose round orders by them scored under `version`, unless
    they already were. Run at the end of a generation job and by `manage.py score_margins` (after a new version
    became current)."""
    related = ("prompt", "response_a", "response_b", "round")
    candidates = list(open_pairs(rounds).select_related(*related).order_by("pk"))
    held = hold_back_near_duplicates(candidates)
    to_score = [p for p in candidates if p.route != Route.DUPLICATE and p.round is not None
                and p.round.queue_order != QueueOrder.RANDOM and p.margin_version_id != version.pk]
    scored = score_margins(to_score, version, config=config, progress=progress, cancelled=cancelled)
    return Prepared(held_back=held, scored=scored, version=version.name)
