"""What the compare app does: start and answer comparison sets, serve them blind, record votes, run judges.

Views, tasks and commands call these functions. Ratings are in `compare.leaderboard` (data) over
`compare.ratings` (math); the figures of runs and versions in `training.dashboard`.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from django.db import IntegrityError, transaction
from django.db.models import Count, Q

import judges
from annotate.judging import judge_account
from annotate.services import is_automatic
from generation.backends.base import MAX_SEED, GenerationCancelled, SamplingConfig
from generation.models import ModelVersion, Prompt, Response, normalised_hash
from generation.services import answers_for, left_out
from jobs import folder_judges, lifecycle
from jobs.folder_judges import FolderJudgeRefused
from jobs.lifecycle import JobCancelled, Tracker
from jobs.models import FOREGROUND, Status
from judges import JudgeError, canonical_path, verdict  # noqa: F401  (callers catch JudgeError from here)
from prefcore import outcomes
from prefcore.chat import prompt_text
from prefcore.outcomes import OUTCOMES, SIDE_LABELS, SIDES
from prefloop.numerics import dtype_choice

from . import blinding
from .models import CompareJob, Comparison, Vote

_START_LOCK = 0x100C  # PostgreSQL advisory lock of start_compare_job (loop.services' is 0x100B)

log = logging.getLogger(__name__)

TYPED_TAG = Prompt.TYPED_TAG  # prompts typed on the compare page: eval split, but not part of the eval set
MAX_PROMPTS = 500

Answerer = Callable[..., dict[int, Response]]


class CompareError(Exception):
    """Something a person can fix: same version twice, no prompts, a vote twice."""


class AlreadyStarted(lifecycle.AlreadyActive, CompareError):
    """An active set of the same comparison (the same form sent twice): `job` is that set."""


class AlreadyVoted(CompareError):
    """This voter has a vote on this comparison already (a second press of a key: the first vote stands)."""


class NotBlind(CompareError):
    """A vote on a side-by-side set, which shows the versions' names: it would not be fair, so none is stored."""




# ---- choosing what to compare ---------------------------------------------------------------------------------


def default_versions() -> tuple[ModelVersion | None, ModelVersion | None]:
    """The current version and its parent (or the newest other version), as A and B."""
    current = ModelVersion.objects.current() or ModelVersion.objects.order_by("-created").first()
    if current is None:
        return None, None
    other = current.parent or ModelVersion.objects.exclude(pk=current.pk).order_by("-created").first()
    return current, other


def eval_prompt_ids(limit: int) -> list[int]:
    """The first `limit` prompts of the eval split (typed prompts left out), oldest first."""
    return list(Prompt.objects.for_eval().values_list("pk", flat=True)[:limit])


def typed_prompt(text: str) -> Prompt:
    """A prompt typed on the page: stored once (same normalised text, same row), kept out of the eval set."""
    text = text.strip()
    if not text:
        raise CompareError("the prompt is empty: type a prompt or choose the eval split")
    key = normalised_hash(text)
    existing = Prompt.objects.filter(hash=key).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return Prompt.objects.create(
                text=text, split=Prompt.EVAL, source="typed on the compare page", tag=TYPED_TAG, hash=key
            )
    except IntegrityError:  # typed at the same moment by someone else
        return Prompt.objects.get(hash=key)


def start_compare_job(
    version_a: ModelVersion, version_b: ModelVersion, *, prompt_ids: Iterable[int] | None = None, text: str = "",
    limit: int = 8, blind: bool = True, seed: int = 0, sampling: dict | None = None, user=None, enqueue: bool = True,
    judge: str = "",
) -> CompareJob:
    """Record what to compare and queue the answering. prompt_ids, else a typed text, else the eval split.

    `judge` (an allowed "package.module:name"): once the set is answered, the worker has that judge vote on every
    comparison too, as an automatic voter (its votes count for the leaderboard's "automatic" view and the gate)."""
    if version_a.pk == version_b.pk:
        raise CompareError(f"choose two different versions (both are {version_a.name!r})")
    lifecycle.end_orphans()  # a killed command's set is not the twin this one is refused for
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CompareError(f"seed must be a whole number from 0 to {MAX_SEED:,} (got {seed!r})")
    try:  # refused before a job exists, not found wrong by the worker
        SamplingConfig.from_dict(sampling or {})
    except (TypeError, ValueError) as exc:
        raise CompareError(str(exc)) from None
    if judge.strip():
        if not blind:  # as people's votes on a set that shows the names are refused (compare.views.vote)
            raise CompareError("a judge votes on blind sets only: a side-by-side set shows the versions' names, so "
                               "votes on it would not be fair")
        judges.check_folder_access(judge, user)  # before it is built: building it loads the folder's model
        load_judge(judge.strip())  # JudgeError names a judge that is not allowed or cannot load
    if prompt_ids is not None:
        ids = list(dict.fromkeys(int(i) for i in prompt_ids))
        if not ids:
            raise CompareError("no prompts to compare on: give at least one prompt id")
    elif text.strip():
        ids = [typed_prompt(text).pk]
    else:
        if not 1 <= limit <= MAX_PROMPTS:
            raise CompareError(f"number of prompts must be between 1 and {MAX_PROMPTS} (got {limit})")
        ids = eval_prompt_ids(limit)
        if not ids:
            raise CompareError("the eval split has no prompts: import some with split=eval, or type a prompt")
    missing = set(ids) - set(Prompt.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if missing:
        raise CompareError(f"no prompt with id {', '.join(map(str, sorted(missing)))}")
    # the judge under its one spelling (its votes are stored under it too): typed two ways, it was two sets' judge
    judge = canonical_path(judge.strip()) if judge.strip() else ""
    params = {"seed": seed, "sampling": sampling or {}, **({"judge": judge} if judge else {}),
              **folder_judges.noted(user, judge)}
    # The same set sent twice (a double click, a retried request) while the first is active: both versions answered
    # the same prompts twice over, and the list showed two sets to vote on, each with half the votes.
    with transaction.atomic():
        lifecycle.one_start_at_a_time(_START_LOCK)  # two sent in the same instant both found no twin
        same = CompareJob.objects.filter(status__in=(Status.QUEUED, Status.RUNNING), part_of__in=("", FOREGROUND),
                                         version_a=version_a, version_b=version_b, blind=blind).order_by("pk")
        # settings compared as the worker reads them: {"temperature": "0.5"} and {"temperature": 0.5}, or the default
        # given and left out, are one set's
        twin = next((other for other in same if other.prompt_ids == ids and _same_settings(other.params, params)), None)
        if twin is not None:
            raise AlreadyStarted(f"comparison set {twin.pk} of these versions on these prompts with these settings "
                                 f"is {twin.status} already: vote on it once it is answered, or cancel it to start "
                                 "again", twin)
        job = CompareJob.objects.create(
            version_a=version_a, version_b=version_b, prompt_ids=ids, blind=blind, total=2 * len(ids),
            params=params, created_by=user,
        )
    if enqueue:
        lifecycle.enqueue(job)
    return job


def _same_settings(stored: dict, sent: dict) -> bool:
    def resolved(params: dict) -> tuple:
        return params.get("seed"), acting(SamplingConfig, params.get("sampling")), judge_spelling(params.get("judge", ""))

    return resolved(stored) == resolved(sent)


def acting(config_class, settings: dict | None):
    """Settings as they act, for a twin check: `config_class` (SamplingConfig, DPOConfig) reading them, with every
    default filled in, so a default spelt out ({"temperature": 0.8}) or a number sent as text ("0.8") is the same
    setting. A row stored before its settings were checked is taken as it is."""
    try:
        return config_class.from_dict(settings or {}).to_dict()
    except (TypeError, ValueError):
        return settings


def cancel_compare_job(job: CompareJob) -> None:
    """Stop answering: at once if queued, within seconds if sampling; answers stored so far are kept for reuse,
    and no comparison is made."""
    lifecycle.cancel(job)


# ---- answering ------------------------------------------------------------------------------------------------


def _default_answerer() -> Answerer:
    return answers_for


def _sampling_config(data: dict) -> SamplingConfig | None:
    return SamplingConfig.from_dict(data) if data else None


def run_compare_job(
    job_id: int, *, answer: Answerer | None = None, progress: Callable[[int, int], None] | None = None,
    on_report: Callable[[float, str], None] | None = None,
) -> CompareJob:
    """Both versions answer every prompt (stored answers reused), then one comparison per prompt, sides random.

    Safe to run twice: answers and comparisons already made are kept. `answer` defaults to
    generation.services.answers_for(version, prompts, config, *, seed, on_progress, should_stop, on_partial);
    `progress(done, total)` is called as answers come in, besides the count recorded on the job; `on_report(fraction,
    stage)` at every report of the job's progress (Tracker.on_report: a command's bar), within a batch too.
    A cancelled job stops inside the batch it is sampling; no comparison is made.
    """
    # a retry or a resume walks the set again from its first answer, reusing what it stored: its bar starts at 0
    job = lifecycle.claim(CompareJob, job_id, retry_failed=True, resume_at=lambda job: (0.0, 0))
    if job is None:
        return CompareJob.objects.get(pk=job_id)
    tracker = Tracker(job)
    tracker.on_report = on_report
    try:
        _answer_and_pair(job, answer or _default_answerer(), tracker, progress)
    except FolderJudgeRefused as exc:  # the person's permission, read again: a refusal, no traceback
        lifecycle.fail(job, str(exc))
    except (JobCancelled, GenerationCancelled):
        made = job.comparisons.count()
        if made:  # stopped while its judge voted: the set is answered and stays votable
            votes = Vote.objects.filter(comparison__job=job, is_automatic=True).count()
            lifecycle.stopped(job, f"{made} comparisons made; the judge voted on {votes} of them")
        else:
            done = lifecycle.job_done(job)
            # the bar ends at the answers it kept (their share of it: a judge's votes take the last third): the tokens
            # of the batch it dropped stayed on it, 68% of a set that kept 4 of its 8 answers
            answers_share = 2 / 3 if job.params.get("judge") else 1.0
            lifecycle.stopped(job, f"{done} answer{'s' if done != 1 else ''} kept for reuse, no comparisons made",
                              progress=answers_share * done / max(job.total, 1))
    except Exception as exc:  # shown on the page; the worker log has the traceback
        log.exception("compare job %s failed", job.pk)
        lifecycle.fail(job, f"{type(exc).__name__}: {exc}")
        raise
    job.refresh_from_db()
    return job


def _answer_and_pair(job: CompareJob, answer: Answerer, tracker: Tracker,
                     report: Callable[[int, int], None] | None) -> None:
    path = job.params.get("judge")
    folder_judges.check_creator(job, path)  # before anything is answered: a refused set stores nothing more
    by_id = Prompt.objects.in_bulk(job.prompt_ids)
    prompts = [by_id[i] for i in job.prompt_ids if i in by_id]
    if not prompts:  # deleting a prompt deletes it from the sets queued with it
        raise CompareError(f"all {len(job.prompt_ids)} prompts of this set were deleted after it was queued: "
                           "nothing to compare")
    if deleted := [i for i in job.prompt_ids if i not in by_id]:
        line = (f"left out {len(deleted)} prompt{'s' * (len(deleted) != 1)} deleted after the set was queued: "
                f"{_id_list(deleted)}")
        if line not in job.log:  # said, and once (a set resumed after a lost worker): it finished "4 of 4"
            lifecycle.append_log(job, line)
    n, seed = len(prompts), int(job.params.get("seed", 0))
    if 2 * n != job.total:  # prompts deleted since it was queued: counted against, the bar read "6 / 8" at 99%
        tracker.report(total=2 * n, force=True)
    config = _sampling_config(job.params.get("sampling") or {})
    # the bar's units: each version's answers, then a judge's votes (as an evaluation counts them): the answers took
    # the whole bar, which stood at 99% while the judge voted
    units = (3 if path else 2) * n
    answers = []
    for k, version in enumerate((job.version_a, job.version_b)):
        tracker.check()
        stage = f"answering with {'A' if k == 0 else 'B'}" if job.blind else f"answering with {version.name}"

        def progress(done: int, total: int, offset: int = k * n) -> None:
            tracker.report(done=offset + done, progress=(offset + done) / units, force=True)
            if report:
                report(offset + done, 2 * n)

        def on_partial(done: float, total: int, offset: int = k * n, stage: str = stage) -> None:
            tracker.report(progress=(offset + done) / units, stage=stage)

        tracker.report(stage=stage, force=True)
        answers.append(answer(version, prompts, config, seed=seed, on_progress=progress,
                              should_stop=tracker.should_stop, on_partial=on_partial))
        tracker.report(done=(k + 1) * n, progress=(k + 1) * n / units, force=True)
        if report:
            report((k + 1) * n, 2 * n)
    tracker.check()
    prompts, gone = answered_prompts(prompts, answers, config or SamplingConfig(), "prompt of this set")
    if gone:
        line = left_out_line(gone, config or SamplingConfig())
        if line not in job.log:  # a set resumed after a lost worker says it once
            lifecycle.append_log(job, line)
        n = len(prompts)
        units = (3 if path else 2) * n
        tracker.report(done=2 * n, total=2 * n, progress=2 * n / units, force=True)  # the answers of those compared
    with transaction.atomic():
        for prompt in prompts:
            Comparison.objects.get_or_create(
                job=job, prompt=prompt,
                defaults={"response_a": answers[0][prompt.pk], "response_b": answers[1][prompt.pk],
                          "left_is_a": secrets.randbelow(2) == 0},
            )
    if path:  # a stop from here keeps the comparisons and the votes stored so far
        folder_judges.check_creator(job, path)  # again: the answering may have taken hours
        tracker.report(stage=f"judging with {path}", force=True)
        judge_comparisons(job.comparisons.select_related("prompt", "response_a", "response_b").order_by("pk"),
                          load_judge(path), path, judge_account(path), should_stop=tracker.should_stop,
                          on_vote=lambda done, total: tracker.report(progress=(2 * n + n * done / total) / units,
                                                                     stage=f"judging with {path}: {done} of {total}"))
    lifecycle.finish(job, done=2 * n, total=2 * n)  # the answers of the prompts compared (left out: in the log)


# ---- voting ---------------------------------------------------------------------------------------------------


def next_comparison_for(job: CompareJob, user, left_out: dict[int, str] | None = None) -> Comparison | None:
    """The job's first comparison this person has not voted on and can vote on blind (see compare.blinding:
    comparisons whose answers they have seen named are left out)."""
    left_out = blinding.left_out(job, user) if left_out is None else left_out
    voted = Vote.objects.filter(voter=user, comparison__job=job).values("comparison_id")
    return (
        job.comparisons.exclude(pk__in=voted).exclude(pk__in=list(left_out))
        .select_related("prompt", "response_a", "response_b").order_by("pk").first()
    )


def blind_progress(job: CompareJob, user) -> dict:
    """Where this person stands on a blind set, for its page and the API alike: the next comparison to vote on
    (None when none is left for them), their votes on it, the comparisons they can vote on blind (voted ones
    included), and why the others were left out (each reason once)."""
    left_out = blinding.left_out(job, user)
    return {
        "comparison": next_comparison_for(job, user, left_out),
        "voted": job.comparisons.filter(votes__voter=user).count(),
        "count": job.comparisons.count() - len(left_out),
        "left_out": sorted(set(left_out.values())),
        "left_out_count": len(left_out),
    }


def sets_with_counts(user):
    """Comparison sets, newest first, each with `n` (its comparisons) and `mine` (this person's votes on it): the
    sets list of the compare page and of the API."""
    return CompareJob.objects.annotate(
        n=Count("comparisons", distinct=True),
        mine=Count("comparisons__votes", filter=Q(comparisons__votes__voter=user), distinct=True),
    ).order_by("-created", "-pk")


def set_refusal(job: CompareJob) -> tuple[str, str] | None:
    """Why a set takes no votes from anyone, as (kind, sentence): "side_by_side" (it shows the versions' names) or
    "answering" (it is still being answered); None: it takes them."""
    if not job.blind:
        return "side_by_side", (f"comparison set {job.pk} is side by side: it shows the versions' names, so it "
                                "takes no votes")
    if job.is_active:
        return "answering", f"comparison set {job.pk} is still being answered: vote once it is"
    return None


def refusal_to_vote(comparison: Comparison, user) -> tuple[str, str] | None:
    """Why this person may not vote on the comparison, for the set's page and the API alike, as (kind, sentence);
    None: they may. Kinds: "side_by_side" (the set shows the versions' names), "answering" (the set is still being
    answered), "automatic" (an automatic account's votes are a judge's, stored by the set's judge: cast here they
    counted as people's), "not_blind" (the person has seen these answers named)."""
    refused = comparison.job and set_refusal(comparison.job)
    if refused:
        return refused
    if is_automatic(user):
        return "automatic", ("an automatic account's votes are a judge's: start the set with its judge, which stores "
                             "them as the judge's")
    why = blinding.why_not_blind(comparison, user)
    return ("not_blind", f"it would not be blind ({why})") if why else None


def outcome_for_side(comparison: Comparison, side: str) -> str:
    """The key as pressed (left, right, tie, both_bad) in terms of the stored responses (a, b, tie, both_bad)."""
    if side not in SIDES:
        raise CompareError(f"side must be one of {', '.join(SIDES)} (got {side!r})")
    return outcomes.outcome_for_side(side, comparison.left_is_a)


def side_for_outcome(comparison: Comparison, outcome: str) -> str:
    """Where the chosen answer was shown: "left", "right", or "tie" / "both bad"."""
    return SIDE_LABELS[outcomes.side_for_outcome(outcome, comparison.left_is_a)]


def record_vote(comparison: Comparison, voter, outcome: str, *, is_automatic: bool = False, judge: str = "") -> Vote:
    """Store one vote (a, b, tie or both_bad). A second vote by the same voter on the same comparison is
    AlreadyVoted; a vote on a set that is not blind is NotBlind (whoever casts it: a person, a judge, a script)."""
    if outcome not in OUTCOMES:
        raise CompareError(f"outcome must be one of {', '.join(OUTCOMES)} (got {outcome!r})")
    if comparison.job_id is not None and not CompareJob.objects.filter(pk=comparison.job_id, blind=True).exists():
        raise NotBlind("this comparison set is not blind: votes on it would not be fair")
    try:
        with transaction.atomic():
            return Vote.objects.create(
                comparison=comparison, voter=voter, outcome=outcome, is_automatic=is_automatic, judge=judge
            )
    except IntegrityError:
        raise AlreadyVoted(f"{voter} already voted on comparison {comparison.pk}") from None


def job_summary(job: CompareJob, *, include_automatic: bool = False, automatic_only: bool = False) -> dict[str, int]:
    """Counts of votes on a job's comparisons: a wins, b wins, ties, both bad (people's; judges' too, or only)."""
    votes = Vote.objects.filter(comparison__job=job)
    if automatic_only:
        votes = votes.filter(is_automatic=True)
    elif not include_automatic:
        votes = votes.filter(is_automatic=False)
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in votes.values_list("outcome", flat=True):
        counts[outcome] += 1
    return counts


# ---- automatic judges -----------------------------------------------------------------------------------------

Judge = judges.Judge


def load_judge(dotted_path: str) -> Judge:
    """The judge at "package.module:name" (see `judges.load_judge`), computing in the product's dtype."""
    return judges.load_judge(dotted_path, dtype=dtype_choice())


def judge_comparisons(
    comparisons: Iterable[Comparison], judge_callable: Judge, judge_name: str, voter, *,
    should_stop: Callable[[], bool] | None = None, on_vote: Callable[[int, int], None] | None = None,
) -> list[Vote]:
    """Let a judge vote on each comparison this voter has not voted on yet; returns the new votes.

    The judge is called as judge(prompt_text, first_text, second_text) with the answers in the order people see
    them (left first), so a judge's position bias averages out over the randomised sides; its "a" means the first
    argument. A judge that raises, or returns anything but "a", "b", "tie", "both_bad" or a probability in [0, 1]
    that the first is better, stops the run with a JudgeError naming the judge and the comparison; the votes
    stored before it stay. `should_stop()` is asked before each judge call and again before its vote is stored:
    True raises JobCancelled, with the votes before it stored and none for the call in flight. `on_vote(done, total)`
    is told after each comparison (a slow judge's progress: a job silent for minutes reads as lost).
    """
    votes = []
    comparisons = list(comparisons)
    for done, comparison in enumerate(comparisons, 1):
        if should_stop and should_stop():
            raise JobCancelled
        if not Vote.objects.filter(comparison=comparison, voter=voter).exists():
            votes.append(_judge_vote(comparison, judge_callable, judge_name, voter, should_stop))
        if on_vote:
            on_vote(done, len(comparisons))
    return votes


def judge_spelling(name: str) -> str:
    """A judge's one spelling (judges.canonical_path), or the name as given when it is no judge path (a judge
    called from code under a name of its own); "" (no judge) stays ""."""
    if not name:
        return name
    try:
        return canonical_path(name)
    except JudgeError:
        return name


def _judge_vote(comparison: Comparison, judge_callable: Judge, judge_name: str, voter,
                should_stop: Callable[[], bool] | None) -> Vote:
    """The judge's vote on one comparison, stored (judge_comparisons)."""
    left, right = (
        (comparison.response_a, comparison.response_b) if comparison.left_is_a
        else (comparison.response_b, comparison.response_a)
    )
    # the whole conversation, as labelling and pairing show it: `text` is a chat's last user turn alone, and the
    # evaluation's judge voted without its system prompt and history
    # and the rule labelling and pairing follow: a cut answer never wins over a finished one, unless the judge
    # finds both bad (the evaluation's judge voted for cut answers, and the win-rate and the gate counted them)
    first = outcomes.cut_rule(left.finish_reason == "length", right.finish_reason == "length", verdict(
        judge_callable, judge_name, prompt_text(comparison.prompt.as_input), left.text, right.text,
        where=f"comparison {comparison.pk}"))
    if should_stop and should_stop():
        raise JobCancelled
    side = outcomes.side_for_outcome(first, left_is_a=True)  # the judge's "a" is the left answer
    # under the judge's one spelling, as its account is: stored as typed, one judge named two ways was two sources
    return record_vote(comparison, voter, outcome_for_side(comparison, side), is_automatic=True,
                       judge=judge_spelling(judge_name))


def answered_prompts(prompts: list[Prompt], answers: list[dict[int, Response]], config: SamplingConfig,
                     what: str) -> tuple[list[Prompt], list[Prompt]]:
    """(the prompts every version answered, those left out as too long for the model's context: answers_for); a
    CompareError when none is left (`what` names a prompt in it: "prompt of this set", "evaluation prompt")."""
    gone = left_out(prompts, *answers)
    kept = [p for p in prompts if p not in gone] if gone else prompts
    if not kept:
        raise CompareError(f"every {what} is too long for the model's context with max_new_tokens "
                           f"{config.max_new_tokens}: nothing to compare")
    return kept, gone


def left_out_line(prompts, config) -> str:
    """The log line naming the prompts a set or an evaluation left out, too long for the model's context."""
    return (f"left out {len(prompts)} prompt{'s' * (len(prompts) != 1)} too long to leave room for max_new_tokens "
            f"{config.max_new_tokens} in the model's context (ids {_id_list([p.pk for p in prompts])}): shorten or "
            "remove them")


def _id_list(ids: list[int], shown: int = 20) -> str:
    """The first `shown` ids, for a log line, and "…" after them when there are more."""
    return ", ".join(map(str, ids[:shown])) + (", …" if len(ids) > shown else "")
