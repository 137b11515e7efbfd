"""A round's training data: the decided pairs as PreferencePairs, with cached reference log-probs filled in, and
the held-out pairs (a fixed share of prompts, chosen by hash, never trained on) that measure each round.

Cached reference log-probs are the trainer's own (never the sampler's Response.logp_sum), and are kept per dtype:
a value computed in bf16 differs from the fp32 one by far more than fp32's rounding (docs/numerics.md), so a run
in one dtype never mixes in the other's. The stored key names the computation as well as the dtype (`cache_key`):
half-precision values of an earlier computation are stored under another key (the bare dtype name before the
lm_head ran in autocast's dtype, "/h2" before the CPU's packed attention), which no run reads any more (even one
written by a worker still on the old code while a new release migrates)."""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from types import SimpleNamespace

from annotate.dataset import decided_pairs
from generation.models import ModelVersion, Prompt, Response
from prefloop.numerics import product_dtype

from .dpo.data import PreferencePair
from .models import ReferenceLogp

# the half-precision computation of today (training/dpo/logps.py): the lm_head's product in autocast's dtype (h2),
# and on the CPU the batch packed without padding under the trainer's own attention, its softmax in that dtype (h3)
HALF_PRECISION_KEYS = {"bfloat16": "bfloat16/h3", "float16": "float16/h3"}


def cache_key(dtype: str) -> str:
    """What ReferenceLogp.dtype stores for values computed in `dtype` by the trainer's current computation."""
    return HALF_PRECISION_KEYS.get(dtype, dtype)


def labelling_round(version: ModelVersion) -> int:
    """The labelling round whose pairs a version sampled (generation files them under the version's round + 1)."""
    return version.round + 1


def is_heldout(prompt_id: int, fraction: float) -> bool:
    """Whether a prompt's pairs are held out: a hash of its id, so the set is the same in every round."""
    digest = hashlib.sha256(f"prefloop-heldout:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class RoundData:
    pairs: list[PreferencePair]  # what the round trains on
    rows: list[tuple[Response, Response]]  # (chosen, rejected) behind each training pair
    heldout: list[PreferencePair]  # decided pairs of held-out prompts (any round), none of them in `pairs`
    heldout_rows: list[tuple[Response, Response]]
    holding_out: bool  # False when too few pairs: the held-out prompts of this round were trained on
    same_answers: int = 0  # decided pairs left out because both answers are the same text (they teach nothing)


def round_data(
    *, reference: ModelVersion, max_length: int, dtype: str | None = None, rounds: list[int] | None = None,
    replay_seed: int | str | None = None, include_automatic: bool = True, heldout_fraction: float = 0.0,
    heldout_min_pairs: int = 0,
) -> RoundData:
    """The training pairs (every decided pair so far, or those of the given labelling rounds) without the held-out
    prompts' pairs, once at least `heldout_min_pairs` are decided; and the held-out pairs to measure the round on.
    Below that threshold every pair trains (a round of a few pairs cannot spare any); such a round's log says so,
    and its held-out prompts' pairs are then measured on in later rounds although an earlier version saw them.
    `dtype` ("float32", "bfloat16"; default the product's) picks the cached reference log-probs filled in.

    `replay_seed` (with `rounds`): replay as many decided pairs of other rounds as those rounds' pairs train, drawn
    at random with that seed (never a held-out prompt's), so a round keeps what earlier labels taught at a cost that
    does not grow with them."""
    # decided_pairs leaves eval prompts out; look again here, where training data is made: whatever path a pair
    # came in by (import, generation, the admin), a pair on an eval prompt is never trained on.
    # A pair whose two answers are one text (an imported row can be: HH-RLHF has such rows) teaches nothing, h being 0
    # whatever the weights, and would count as wrong in the held-out accuracy: left out, and counted.
    def usable(d) -> bool:
        return d.pair.prompt.split != Prompt.EVAL and d.chosen.text != d.rejected.text

    decided = [d for d in decided_pairs(include_automatic=include_automatic, rounds=rounds)
               if d.pair.prompt.split != Prompt.EVAL]
    in_scope = [d for d in decided if usable(d)]
    holding_out = heldout_fraction > 0 and len(in_scope) >= heldout_min_pairs
    train = [d for d in in_scope if not (holding_out and is_heldout(d.pair.prompt_id, heldout_fraction))]
    everything = in_scope if rounds is None else [
        d for d in decided_pairs(include_automatic=include_automatic) if usable(d)]
    if rounds is not None and replay_seed is not None:
        new = {d.pair.pk for d in in_scope}
        # never another round's held-out pairs, even when this round is too small to hold its own out: those were
        # held out when their round trained, and later rounds are measured on them
        earlier = [d for d in everything if d.pair.pk not in new
                   and not (heldout_fraction > 0 and is_heldout(d.pair.prompt_id, heldout_fraction))]
        chosen = set(random.Random(replay_seed).sample(range(len(earlier)), min(len(earlier), len(train))))
        train += [d for i, d in enumerate(earlier) if i in chosen]
    trained = {d.pair.pk for d in train}
    heldout = [d for d in everything
               if heldout_fraction > 0 and is_heldout(d.pair.prompt_id, heldout_fraction) and d.pair.pk not in trained]
    dtype = dtype or product_dtype()
    pairs, rows = _preference_pairs(train, reference, max_length, dtype)
    held, held_rows = _preference_pairs(heldout, reference, max_length, dtype)
    return RoundData(pairs, rows, held, held_rows, holding_out, same_answers=len(decided) - len(in_scope))


def spin_data(*, input_version: ModelVersion, reference: ModelVersion, max_length: int, dtype: str | None = None,
              heldout_fraction: float = 0.0, heldout_min_pairs: int = 0) -> RoundData:
    """Self-play (SPIN, Chen et al. 2024): every train prompt with a reference answer (imported with its prompt)
    gives one pair per answer `input_version` sampled for it, the reference chosen over the version's own answer.
    A prompt with several reference answers pairs them with its samples in turn. No label is read: the data is the
    reference answers and the version's samples, so a SPIN round follows a generation job on those prompts. Held
    out as labelled pairs are: by prompt, once at least `heldout_min_pairs` pairs are made."""
    # only the prompts the version answered (a page previews this for every load, whatever was sampled), in
    # subqueries rather than lists of ids
    answered = Response.objects.filter(version=input_version, is_reference=False).values("prompt_id")
    with_reference = Response.objects.filter(is_reference=True).values("prompt_id")
    references: dict[int, list[Response]] = {}
    for response in (Response.objects.filter(is_reference=True, prompt__split=Prompt.TRAIN, prompt_id__in=answered)
                     .select_related("prompt").order_by("prompt_id", "pk")):
        references.setdefault(response.prompt_id, []).append(response)
    own = (Response.objects.filter(version=input_version, is_reference=False, prompt__split=Prompt.TRAIN,
                                   prompt_id__in=with_reference)
           .order_by("prompt_id", "sample_index", "pk"))
    made, turn = [], {}
    for sample in own:
        refs = references.get(sample.prompt_id)
        # an answer equal to one of its prompt's references is no worse than it: no pair (with its own, h is 0)
        if not refs or any(sample.text == r.text for r in refs):
            continue
        k = turn.get(sample.prompt_id, 0)
        turn[sample.prompt_id] = k + 1
        made.append(_SpinPair(refs[k % len(refs)], sample))
    holding_out = heldout_fraction > 0 and len(made) >= heldout_min_pairs
    out = [holding_out and is_heldout(d.chosen.prompt_id, heldout_fraction) for d in made]
    train = [d for d, held in zip(made, out, strict=True) if not held]
    held = [d for d, held in zip(made, out, strict=True) if held]
    dtype = dtype or product_dtype()
    pairs, rows = _preference_pairs(train, reference, max_length, dtype)
    heldout, heldout_rows = _preference_pairs(held, reference, max_length, dtype)
    return RoundData(pairs, rows, heldout, heldout_rows, holding_out)


@dataclass(eq=False)
class _SpinPair:
    """A SPIN pair in the shape _preference_pairs reads (a decided pair's chosen, rejected, prompt and key)."""
    chosen: Response
    rejected: Response
    preference_prob: float | None = None

    @property
    def pair(self):
        return SimpleNamespace(prompt=self.chosen.prompt, pk=f"spin:{self.rejected.pk}")


def round_pairs(
    *, reference: ModelVersion, max_length: int, include_automatic: bool = True, rounds: list[int] | None = None,
) -> tuple[list[PreferencePair], list[tuple[Response, Response]]]:
    """Every decided pair so far (or of the given labelling rounds) and the (chosen, rejected) responses behind each."""
    data = round_data(reference=reference, max_length=max_length, rounds=rounds, include_automatic=include_automatic)
    return data.pairs, data.rows


def store_reference_logps(reference: ModelVersion, max_length: int, dtype: str, rows: list[tuple[Response, Response]],
                          values: list[tuple[float, float]], truncated: list[bool]) -> None:
    """Cache log pi_ref per (response, reference, max length, dtype) for the (chosen, rejected) rows: later epochs,
    rounds and measurements in the same dtype reuse them. Values already stored stay.

    Only a pair scored whole is cached. A pair too long for max_length is cut by its longer answer (the prompt to
    max_prompt_length, then both answers), so a value from it is that of the answer in this pair only: the same
    answer beside a shorter partner, or under another max_prompt_length, is scored on more tokens. A value from a
    whole pair is the answer's alone (len(prompt) + len(answer) <= max_length), and a pair both of whose answers
    have one is itself whole, so every value read back (_preference_pairs, annotate.selection) is exact for the
    pair that reads it. A pair the trainer could not score (a response truncated to nothing) comes back as NaN: no
    value, so nothing is cached for it (PostgreSQL would keep the NaN, and a later run would train on it)."""
    objs = [ReferenceLogp(response=response, reference=reference, max_length=max_length, dtype=cache_key(dtype),
                          logp=value)
            for (chosen, rejected), (ref_c, ref_r), cut in zip(rows, values, truncated, strict=True) if not cut
            for response, value in ((chosen, ref_c), (rejected, ref_r))
            if math.isfinite(value)]
    ReferenceLogp.objects.bulk_create(objs, ignore_conflicts=True)


def _preference_pairs(decided, reference: ModelVersion, max_length: int, dtype: str):
    # a pair gets cached values only when both of its answers have one (PreferencePair.has_reference): it is then
    # whole, and they are exact for it (store_reference_logps)
    response_ids = list({r.pk for d in decided for r in (d.chosen, d.rejected)})
    cached = {
        row.response_id: row.logp
        for row in ReferenceLogp.objects.filter(response_id__in=response_ids, reference=reference,
                                                max_length=max_length, dtype=cache_key(dtype))
    }
    pairs, rows = [], []
    for d in decided:
        pairs.append(PreferencePair(
            prompt=d.pair.prompt.as_input, chosen=d.chosen.text, rejected=d.rejected.text,
            preference_prob=d.preference_prob, ref_chosen_logp=cached.get(d.chosen.pk),
            ref_rejected_logp=cached.get(d.rejected.pk), key=d.pair.pk,
            chosen_flags=_flags(d.chosen), rejected_flags=_flags(d.rejected),
        ))
        rows.append((d.chosen, d.rejected))
    return pairs, rows


def _flags(response: Response) -> frozenset[str]:
    """The rule flags loss terms see (training/dpo/terms.py): "cut" for an answer stopped at the token limit."""
    return frozenset({"cut"}) if response.finish_reason == "length" else frozenset()
