"""A round's training data: the decided pairs as PreferencePairs, with cached reference log-probs filled in."""
from __future__ import annotations

from generation.models import ModelVersion, Response

from .dpo.data import PreferencePair
from .models import ReferenceLogp


def labelling_round(version: ModelVersion) -> int:
    """The labelling round whose pairs a version sampled (generation files them under the version's round + 1)."""
    return version.round + 1


def round_pairs(
    *, reference: ModelVersion, max_length: int, include_automatic: bool = True, rounds: list[int] | None = None,
) -> tuple[list[PreferencePair], list[tuple[Response, Response]]]:
    """Every decided pair so far (or of the given labelling rounds) and the (chosen, rejected) responses behind each."""
    from annotate.dataset import decided_pairs

    decided = decided_pairs(include_automatic=include_automatic, rounds=rounds)
    response_ids = [r.pk for d in decided for r in (d.chosen, d.rejected)]
    cached = {
        row.response_id: row.logp
        for row in ReferenceLogp.objects.filter(response_id__in=response_ids, reference=reference, max_length=max_length)
    }
    pairs, rows = [], []
    for d in decided:
        pairs.append(PreferencePair(
            prompt=d.pair.prompt.as_input, chosen=d.chosen.text, rejected=d.rejected.text,
            preference_prob=d.preference_prob, ref_chosen_logp=cached.get(d.chosen.pk),
            ref_rejected_logp=cached.get(d.rejected.pk), key=d.pair.pk,
        ))
        rows.append((d.chosen, d.rejected))
    return pairs, rows
