"""The promotion gate: a finished round's version is a candidate, and becomes current only when a blind evaluation
against the current version passes the gate's rule (compare.gate), or a staff member promotes it by hand. Every
decision is recorded on the run; every change of the current version as a VersionChange (who, when, why).

The Train page, the rounds dashboard and the loop all call these functions.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from compare import blinding
from compare.gate import GateEvidence, GateResult, GateRule, decide
from compare.models import CompareJob, Vote
from compare.services import judge_spelling
from generation.length import mean_tokens, truncated_count
from generation.models import ModelVersion, Prompt, Response, VersionChange
from generation.services import GenerationError, base_version, change_current, current_version, rollback_to

from .models import TrainingRun
from .services import record_round_figures


def awaits_gate(run: TrainingRun | None) -> bool:
    """Whether a run's version still waits on the gate: a candidate not yet checked, or one the gate kept out."""
    return run is not None and run.decision in AWAITING


AWAITING = (TrainingRun.Decision.CANDIDATE, TrainingRun.Decision.KEPT)


class PromotionError(Exception):
    """Something a person can fix: no candidate, no reason given, the version is current already."""


def gate_rule() -> GateRule:
    return GateRule(min_votes=settings.PREFLOOP_GATE_MIN_VOTES, min_win_rate=settings.PREFLOOP_GATE_MIN_WIN_RATE,
                    min_lower_bound=settings.PREFLOOP_GATE_MIN_LOWER_BOUND,
                    max_length_growth=settings.PREFLOOP_GATE_MAX_LENGTH_GROWTH,
                    max_cut_share_growth=settings.PREFLOOP_GATE_MAX_CUT_SHARE_GROWTH,
                    max_kl_per_token=settings.PREFLOOP_GATE_MAX_KL_PER_TOKEN,
                    max_kl_to_base_per_token=settings.PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN)


def gate_evidence(current: ModelVersion, candidate: ModelVersion,
                  jobs: Iterable[CompareJob] | None = None) -> GateEvidence:
    """Every blind vote (people's and judges') on eval-prompt comparisons between the two versions, counted for the
    candidate, once per voter and pair of answers: two sets with the same seed and settings hold the same answers
    (they are reused), and a judge voting on both said one thing twice. An answer is its version, its prompt and its
    text (compare.blinding.answer_of), not its row: the same words stored twice (greedy sampling at another seed,
    another token limit the answer ended before) are one answer, or a judge's 8 verdicts would count as 16. Lengths
    are the two versions' mean answer tokens over the voted pairs of answers, and base's where the current version
    is not base: base's answers to the same prompts under the same sampling settings and seed as the candidate's (an
    answer from another token limit is not the same measure). `jobs` narrows it to given comparison sets (the loop
    passes the evaluation it just ran)."""
    pair = {current.pk, candidate.pk}
    blind = CompareJob.objects.filter(blind=True, version_a__in=pair, version_b__in=pair)
    if jobs is not None:
        blind = blind.filter(pk__in=[j.pk for j in jobs])
    # eval prompts of the fixed set (Prompt.objects.for_eval): a prompt typed on the compare page is stored in the eval
    # split so no round trains on it, but one typed and voted on was the gate's evidence too, picked by hand
    votes = (Vote.objects.filter(comparison__job__in=blind, comparison__prompt__split=Prompt.EVAL)
             .exclude(comparison__prompt__tag=Prompt.TYPED_TAG)
             .select_related("comparison__response_a", "comparison__response_b")
             .defer("comparison__response_a__token_ids", "comparison__response_b__token_ids").order_by("pk"))
    evidence = GateEvidence()
    sources: set[str] = set()
    voted, counted, scores = {}, set(), {}
    known: dict[int, tuple] = {}  # by response id: a text is digested once, however many voted on it

    def answer(response: Response) -> tuple:
        # with its version: the two versions' answers to a prompt can be the same words, and stay two sides
        if response.pk not in known:
            known[response.pk] = (response.version_id, *blinding.answer_of(response))
        return known[response.pk]

    for vote in votes:
        comparison = vote.comparison
        answers = frozenset((answer(comparison.response_a), answer(comparison.response_b)))
        if (vote.voter_id, answers) in counted:  # the voter's first verdict on these two answers stands
            continue
        counted.add((vote.voter_id, answers))
        candidate_is_a = comparison.response_a.version_id == candidate.pk
        if vote.outcome == "tie":
            evidence.ties += 1
            score = 0.5
        elif vote.outcome == "both_bad":
            evidence.both_bad += 1
            score = 0.5
        elif (vote.outcome == "a") == candidate_is_a:
            evidence.candidate_wins += 1
            score = 1.0
        else:
            evidence.current_wins += 1
            score = 0.0
        scores.setdefault(answers, []).append(score)
        sources.add(_source(vote))
        ours, theirs = ((comparison.response_a, comparison.response_b) if candidate_is_a
                        else (comparison.response_b, comparison.response_a))
        voted.setdefault(answers, (ours, theirs))  # one row of each answer: the first voted on
    # the rate and its interval rest on the pairs of answers, each its voters' mean (GateEvidence.pairs)
    evidence.pairs = len(scores)
    # summed exactly (three voters' thirds added as floats fell short of the even split they make)
    evidence.pair_score = float(sum((Fraction(sum(each)) / len(each) for each in scores.values()), Fraction(0)))
    if voted:
        evidence.answers = len(voted)
        evidence.candidate_tokens = mean_tokens(ours for ours, _ in voted.values())
        evidence.current_tokens = mean_tokens(theirs for _, theirs in voted.values())
        evidence.candidate_truncated = truncated_count(ours for ours, _ in voted.values())
        evidence.current_truncated = truncated_count(theirs for _, theirs in voted.values())
        base = base_version(candidate)
        if base.pk not in pair:
            settings_of = {(ours.prompt_id, ours.sampling_key) for ours, _ in voted.values() if ours.sampling_key}
            found = (Response.objects.filter(version=base, prompt_id__in={p for p, _ in settings_of})
                     .only("prompt_id", "sampling_key", "token_count", "finish_reason").order_by("pk"))
            first = {(r.prompt_id, r.sampling_key): r for r in reversed(list(found))}  # one per prompt, the first
            # base's answer beside each voted pair, and only when base answered every one: the bounds compare means
            # over the same prompts, and base's mean over a few of them (an earlier, smaller set) held the candidate to
            # the length of another set of prompts
            answers = [first.get((ours.prompt_id, ours.sampling_key)) for ours, _ in voted.values()]
            if all(answers):
                evidence.base_answers = len(answers)
                evidence.base_tokens = mean_tokens(answers)
                evidence.base_truncated = truncated_count(answers)
    evidence.sources = sorted(sources)
    return evidence


def _source(vote: Vote) -> str:
    """Who cast a vote, for the gate's evidence: "people", or the judge by its one spelling (votes stored before
    judges were stored that way hold the path as it was typed)."""
    return judge_spelling(vote.judge) if vote.is_automatic and vote.judge else "people"


def candidate_run(version: ModelVersion) -> TrainingRun:
    run = TrainingRun.objects.filter(output_version=version).first()
    if run is None:
        raise PromotionError(f"version {version.name!r} was not made by a training round here")
    return run


def _refuse_while_measuring(run: TrainingRun) -> None:
    """A version is a candidate once registered, but its run still measures it (the gate's KL among the figures),
    and its end records the run's decision: the gate and a promotion by hand wait until then."""
    if run.is_active:
        raise PromotionError(f"training run {run.pk} is still {run.status} (measuring {run.output_version.name}): "
                             "decide once it has finished")


def check_gate(run: TrainingRun, *, jobs: Iterable[CompareJob] | None = None) -> GateResult:
    """Apply the gate to a run's version against the current version; promote it when it passes. Recorded on the
    run either way (decision "promoted" or "kept", with the rule, the evidence and the reasons)."""
    candidate = run.output_version
    if candidate is None:
        raise PromotionError(f"training run {run.pk} has no version (it is {run.status})")
    _refuse_while_measuring(run)
    current = current_version()
    if current.pk == candidate.pk:
        raise PromotionError(f"version {candidate.name!r} is already the current one")
    _refuse_decided(run, "roll back to it to make it current again")
    rule = gate_rule()
    evidence = gate_evidence(current, candidate, jobs)
    # the drift budget's KL: measured when the round finished, on its own answers to the first eval prompts
    metrics = run.metrics or {}
    if metrics.get("sampled/mean_tokens"):
        evidence.kl_answer_tokens = float(metrics["sampled/mean_tokens"])
        for key in ("kl_to_reference", "kl_to_base"):
            if metrics.get(key) is not None:
                setattr(evidence, key, float(metrics[key]))
        # a round measured before KL to base was, whose reference is base: its KL to the reference is that figure
        if evidence.kl_to_base is None and run.reference_version_id == base_version(candidate).pk:
            evidence.kl_to_base = evidence.kl_to_reference
    result = decide(evidence, rule)
    with transaction.atomic():
        run.gate = {"rule": rule.as_dict(), "against": current.name, "evidence": evidence.as_dict(),
                    "passed": result.passed, "reasons": result.reasons, "checked": timezone.now().isoformat()}
        run.decision = TrainingRun.Decision.PROMOTED if result.passed else TrainingRun.Decision.KEPT
        run.decided_at, run.decided_by = timezone.now(), None
        # only over a decision still awaited: another check or a promotion by hand at the same moment decided first
        if not TrainingRun.objects.filter(pk=run.pk, decision__in=AWAITING).update(
                gate=run.gate, decision=run.decision, decided_at=run.decided_at, decided_by=None):
            _refuse_decided(run, "roll back to it to make it current again")
            raise PromotionError(f"training run {run.pk} is gone")
        if result.passed:
            change_current(candidate, action=VersionChange.Action.GATE,
                           reason=f"passed the gate against {current.name}: {result.reason}")
    low, high = evidence.interval if evidence.n else (math.nan, math.nan)
    record_round_figures(run, {"gate/win_rate_vs_current": evidence.win_rate, "gate/ci95_low": low,
                               "gate/ci95_high": high, "gate/votes": evidence.votes, "gate/pairs": evidence.n,
                               "gate/promoted": 1.0 if result.passed else 0.0})
    return result


def _refuse_decided(run: TrainingRun, instead: str) -> None:
    """A run whose version was promoted (by the gate or by hand) keeps that decision, who made it and why: checking
    the gate again, or promoting it by hand again, would write over them (the page offers neither; a form posted
    again, or by hand, could). The decision is read from the database, not from the caller's copy."""
    decision = TrainingRun.objects.filter(pk=run.pk).values_list("decision", flat=True).first()
    if decision not in AWAITING:
        raise PromotionError(f"version {run.output_version.name!r} has had its gate decision ({decision}): {instead}")


def promote_by_hand(run: TrainingRun, *, user, reason: str) -> VersionChange:
    """A staff member promotes a round's version whatever the gate said; the reason is required and recorded."""
    if run.output_version is None:
        raise PromotionError(f"training run {run.pk} has no version (it is {run.status})")
    _refuse_while_measuring(run)
    _refuse_decided(run, "roll back to it (with a reason, recorded) to make it current again")
    reason = (reason or "").strip()
    if not reason:
        raise PromotionError("say why you promote this version by hand (the reason is recorded)")
    if len(reason) > 2000:
        raise PromotionError(f"reason: at most 2000 characters (got {len(reason)})")
    with transaction.atomic():
        # only over a decision still awaited (a gate check at the same moment decided first), and before the change
        # of version, which the refusal then rolls back with it
        if not TrainingRun.objects.filter(pk=run.pk, decision__in=AWAITING).update(
                decision=TrainingRun.Decision.BY_HAND, decided_by=user, decided_at=timezone.now(),
                decision_note=reason):
            _refuse_decided(run, "roll back to it (with a reason, recorded) to make it current again")
            raise PromotionError(f"training run {run.pk} is gone")
        try:
            change = change_current(run.output_version, action=VersionChange.Action.BY_HAND, user=user, reason=reason)
        except GenerationError as exc:
            raise PromotionError(str(exc)) from None
    return change


def rollback(version: ModelVersion, *, user, reason: str = "") -> VersionChange:
    """Make a version that is not awaiting the gate current again (base, or one that was current or decided before);
    a candidate awaiting the gate passes it or is promoted by hand with a reason (promote_by_hand)."""
    if awaits_gate(getattr(version, "made_by_run", None)):
        raise PromotionError(f"{version.name} is a candidate awaiting the promotion gate: check the gate, or promote "
                             "it by hand with a reason (recorded)")
    if len(reason or "") > 2000:
        raise PromotionError(f"reason: at most 2000 characters (got {len(reason)})")
    try:
        return rollback_to(version, user=user, reason=reason or "")
    except GenerationError as exc:
        raise PromotionError(str(exc)) from None


def version_table() -> list[dict]:
    """Every version for the Train page's versions table: whether it is current, the run that made it and its gate
    decision, and which action the page offers (check the gate / promote by hand for a candidate; roll back to any
    other version)."""
    runs = {r.output_version_id: r for r in TrainingRun.objects.filter(output_version__isnull=False)
            .select_related("decided_by")}
    rows = []
    for version in ModelVersion.objects.order_by("-round", "-created"):
        run = runs.get(version.pk)
        pending = awaits_gate(run)
        rows.append({"version": version, "run": run,
                     "pending": pending and not version.is_current and not run.is_active,
                     "can_roll_back": not version.is_current and not pending})
    return rows


def recent_changes(limit: int = 20) -> list[VersionChange]:
    return list(VersionChange.objects.select_related("version", "previous", "user")[:limit])
