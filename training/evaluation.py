"""What a finished round is measured on: implicit-reward accuracy and margin on held-out labelled pairs, and the
new version's own answers to eval prompts (mean KL to the reference and to base, mean length), all scored by the trainer's
log-prob code under the one chat template."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from generation.backends.base import GenerationCancelled, SamplingConfig
from generation.length import mean_tokens, truncated_count
from generation.models import ModelVersion, Prompt, Response
from generation.services import answers_for, base_version
from prefloop.numerics import product_dtype

from .dataset import store_reference_logps
from .dpo.config import DPOConfig
from .dpo.data import PreferencePair
from .dpo.outcome import TrainingCancelled

logger = logging.getLogger(__name__)

KL_PLACEHOLDER = "."  # the scorer takes pairs; a one-token "rejected" keeps the extra cost negligible


@dataclass
class HeldoutScore:
    pairs: int
    reward_accuracy: float  # share of held-out pairs whose chosen answer gets the larger implicit reward
    margin: float  # mean of beta * h, h = (log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)

    def as_metrics(self) -> dict:
        return {"heldout/pairs": self.pairs, "heldout/reward_accuracy": self.reward_accuracy,
                "heldout/margin": self.margin}


def heldout_score(policy: list[tuple[float, float]], reference: list[tuple[float, float]], beta: float,
                  preference_probs: list[float | None] | None = None) -> HeldoutScore:
    """Accuracy and mean margin of the implicit reward over (chosen, rejected) log-probs; a soft label below 0.5
    flips which side counts as right, a tie (0.5) counts half."""
    probs = preference_probs or [None] * len(policy)
    right, margins = 0.0, []
    for (pc, pr), (rc, rr), prob in zip(policy, reference, probs, strict=True):
        h = (pc - rc) - (pr - rr)
        margins.append(beta * h)
        if prob is not None and abs(prob - 0.5) < 1e-9:
            right += 0.5
        elif (h > 0) == (prob is None or prob > 0.5):
            right += 1
    n = len(margins)
    return HeldoutScore(n, right / n if n else math.nan, sum(margins) / n if n else math.nan)


def eval_answer_prompts(limit: int) -> list[Prompt]:
    """The first eval prompts (oldest first, typed compare prompts left out): the same ones every round."""
    return list(Prompt.objects.for_eval()[:limit])


def mean_kl(version: ModelVersion, reference: ModelVersion, answers: dict[int, Response],
            config: DPOConfig | None = None, should_stop: Callable[[], bool] | None = None) -> float:
    """KL(version || reference) in nats per answer, on the version's own sampled answers: at each answer position
    the KL of the two next-token distributions over the whole vocabulary (`training.dpo.logps.position_kl`), summed
    over the answer, averaged over the answers. Never negative. GenerationCancelled between batches once
    should_stop() says so."""

    from .dpo.trainer import compute_kl  # (here: it imports torch, which the pages that import this never need)

    if not answers:
        return math.nan
    config = config or DPOConfig(batch_size=8, dtype=product_dtype())
    try:
        return _mean_kl(compute_kl(version.path, reference.path, _answer_pairs(answers), config, should_stop,
                                   _answer_ids(answers)))
    except TrainingCancelled:
        raise GenerationCancelled("measuring KL stopped on request") from None


def _mean_kl(per_position: list[list[float]]) -> float:
    """The mean over answers of each answer's summed per-position KL."""
    return sum(sum(kl) for kl in per_position) / len(per_position)


def _answer_pairs(answers: dict[int, Response]) -> list[PreferencePair]:
    prompts = Prompt.objects.in_bulk(list(answers))
    return [PreferencePair(prompt=prompts[pid].as_input, chosen=r.text, rejected=KL_PLACEHOLDER)
            for pid, r in answers.items()]


def _answer_ids(answers: dict[int, Response]) -> list[list[int] | None]:
    """Each answer's tokens as sampled, in _answer_pairs' order (None for one stored without them, an imported
    answer: its text is tokenized). Its text tokenized again could split otherwise, and got an end token a cut
    answer never sampled: the KL was summed over positions the model never drew, then read per sampled token."""
    return [r.token_ids or None for r in answers.values()]


def evaluate_round(version: ModelVersion, reference: ModelVersion, config: DPOConfig,
                   heldout: list[PreferencePair], heldout_rows: list[tuple[Response, Response]],
                   should_stop: Callable[[], bool] | None = None,
                   on_stage: Callable[[str, float], None] | None = None) -> dict:
    """The round's metrics: held-out reward accuracy and margin, KL to the reference and to base and mean length of the new
    version's answers to the eval prompts. Reference log-probs missing from the cache are computed and stored.
    Each model (the version, its reference, and base where that is not the reference) is loaded once, on first
    use; the version and its reference serve the held-out pairs and the answers' KL.

    `should_stop()` is asked per decode step and per scoring batch: True raises GenerationCancelled.
    `on_stage(text, fraction)` is told each part as it starts ("answering eval prompts: 3 of 8", "scoring 40 held-out
    pairs", ...) with how much of the measuring is done by then, 0 to 1 (answering counts most: it samples)."""
    try:
        return _evaluate_round(version, reference, config, heldout, heldout_rows, should_stop, on_stage)
    except TrainingCancelled:  # the scoring's own stop, between its batches
        raise GenerationCancelled("measuring stopped on request") from None


def _evaluate_round(version: ModelVersion, reference: ModelVersion, config: DPOConfig,
                    heldout: list[PreferencePair], heldout_rows: list[tuple[Response, Response]],
                    should_stop: Callable[[], bool] | None, on_stage: Callable[[str, float], None] | None = None) -> dict:
    from .dpo.trainer import Scorer  # (here, as in mean_kl)

    def check() -> None:
        if should_stop is not None and should_stop():
            raise GenerationCancelled("measuring stopped on request")

    metrics: dict = {}
    prompts = eval_answer_prompts(settings.PREFLOOP_ROUND_EVAL_PROMPTS)
    # each part's share of the measuring's bar: sampling the answers takes most of it, scoring and KL a forward pass
    shares = {"answers": 6.0 if prompts else 0.0, "heldout": 1.0 if heldout else 0.0, "kl": 1.0 if prompts else 0.0}
    whole = sum(shares.values()) or 1.0

    def say(text: str, before: tuple[str, ...] = (), within: float = 0.0) -> None:
        """Tell the part `text`, the parts `before` done and `within` of the current part's share."""
        if on_stage is not None:
            part = next((k for k in shares if k not in before), None)
            on_stage(text, min(1.0, (sum(shares[k] for k in before) + within * shares.get(part, 0.0)) / whole))

    answers = {}
    if prompts:
        say(f"answering eval prompts: 0 of {len(prompts)}")
        answers = answers_for(version, prompts, SamplingConfig(), seed=0, should_stop=should_stop,
                              on_progress=lambda done, total: say(f"answering eval prompts: {done} of {total}",
                                                                  within=done / max(total, 1)))
    if not heldout and not answers:
        return metrics
    check()
    dtype = product_dtype() if config.dtype == "auto" else config.dtype  # the cache needs the dtype it holds
    scoring = DPOConfig.from_dict(dict(config.to_dict(), batch_size=8, dtype=dtype))
    policy, base = Scorer(version.path, scoring), Scorer(reference.path, scoring)
    if heldout:
        say(f"scoring {len(heldout)} held-out pair{'s' if len(heldout) != 1 else ''}", before=("answers",))
        own = policy.logps(heldout, should_stop)
        missing = [i for i, p in enumerate(heldout) if not p.has_reference]
        if missing:
            ref, truncated = base.scored([heldout[i] for i in missing], should_stop)
            for j, i in enumerate(missing):
                heldout[i].ref_chosen_logp, heldout[i].ref_rejected_logp = ref[j]
            store_reference_logps(reference, config.max_length, scoring.dtype, [heldout_rows[i] for i in missing], ref,
                                  truncated)
        score = heldout_score(own, [(p.ref_chosen_logp, p.ref_rejected_logp) for p in heldout],
                              config.beta, [p.preference_prob for p in heldout])
        metrics.update(score.as_metrics())
    check()
    if answers:
        say(f"KL to {reference.name!r} on {len(answers)} answer{'s' if len(answers) != 1 else ''}",
            before=("answers", "heldout"))
        try:
            metrics["kl_to_reference"] = _mean_kl(policy.kl(base, _answer_pairs(answers), should_stop,
                                                            _answer_ids(answers)))
        except ValueError as exc:  # a version and a reference that tokenize apart: the other figures still stand
            logger.warning("%s against %s: no KL: %s", version.name, reference.name, exc)
        # and to base, the lineage's first version (the gate's bound on the rounds' drift added up): the same figure
        # where the reference is base, measured again on the same answers where it is a later version
        first = base_version(version)
        if first.pk == reference.pk:
            if "kl_to_reference" in metrics:
                metrics["kl_to_base"] = metrics["kl_to_reference"]
        else:
            check()
            say(f"KL to {first.name!r} on {len(answers)} answer{'s' if len(answers) != 1 else ''}",
                before=("answers", "heldout"), within=0.5)
            base.release()  # the reference's model is let go before base's loads: two models held, not three
            try:
                metrics["kl_to_base"] = _mean_kl(policy.kl(Scorer(first.path, scoring), _answer_pairs(answers),
                                                           should_stop, _answer_ids(answers)))
            except TrainingCancelled:
                raise
            except Exception as exc:  # an extra figure (base's folder gone, out of memory, another tokenizer): the
                # round's other figures stand, and its gate says the bound to base was not checked
                logger.warning("%s against %s: no KL to base: %s: %s", version.name, first.name,
                               type(exc).__name__, exc)
        metrics["sampled/answers"] = len(answers)
        metrics["sampled/mean_tokens"] = mean_tokens(answers.values())
        metrics["sampled/truncated"] = truncated_count(answers.values())
    return metrics
