"""An evaluation: two versions answer the same prompts with the same settings and seeds, and a judge votes blind.

The loop evaluates each round with it, the `evaluate` command and the label-budget benchmark call it directly.
"""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from django.utils import timezone

from annotate.judging import judge_account
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion, Prompt, Response
from generation.services import answers_for
from jobs import lifecycle
from jobs.lifecycle import JobCancelled, Tracker
from jobs.models import FOREGROUND
from jobs.runner import this_process
from judges import Judge, load_judge
from prefloop.numerics import dtype_choice

from .models import CompareJob, Comparison, Vote
from .services import CompareError, answered_prompts, judge_comparisons, left_out_line
from .stats import win_summary


def eval_prompts(*, split: str = Prompt.EVAL, tag: str = "", limit: int | None = None) -> list[Prompt]:
    """The prompts an evaluation uses, oldest first (prompts typed on the compare page left out)."""
    prompts = Prompt.objects.for_eval(split)
    if tag:
        prompts = prompts.filter(tag=tag)
    prompts = list(prompts[:limit] if limit else prompts)
    if not prompts:
        where = f"split {split!r}" + (f" with tag {tag!r}" if tag else "")
        raise CompareError(f"no prompts in {where}: import some with `manage.py import_prompts FILE --split {split}`")
    return prompts


@dataclass
class Evaluation:
    summary: dict
    job: CompareJob
    answers_a: dict[int, Response]
    answers_b: dict[int, Response]


def evaluate(
    version_a: ModelVersion, version_b: ModelVersion, judge_path: str, *, split: str = Prompt.EVAL, tag: str = "",
    limit: int | None = None, seed: int = 0, sampling: dict | None = None, judge: Judge | None = None,
    progress: Callable[[str, float, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
    part_of: str = "",
) -> Evaluation:
    """Both versions answer the prompts with the same settings and per-prompt seeds; the judge votes blind.

    The votes are stored as compare votes of the judge's account, marked automatic, on a comparison set of their
    own; the summary counts them (ties and both-bad count half a win to b). `should_stop()` is asked per decode
    step and between judge calls (see answers_for and judge_comparisons).

    The set reads "running" while the judge votes and ends succeeded, cancelled or failed with it, so a set whose
    worker was lost is never shown as done: `part_of` (the key of the job evaluating, a loop run's) lets that job
    end it, as it ends its other parts, when it finds its own worker was lost. Without one the set is the calling
    process's (FOREGROUND): no worker resumes it; Cancel ends it once it has been silent for minutes, or at once
    when that process is gone (jobs.runner).
    """
    if version_a.pk == version_b.pk:
        raise CompareError(f"choose two different versions (both are {version_a.name!r})")
    judge = judge or load_judge(judge_path, dtype=dtype_choice())
    prompts = eval_prompts(split=split, tag=tag, limit=limit)
    try:
        config = SamplingConfig.from_dict({**(sampling or {}), "n": 1})
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    answers = []
    units = 3 * len(prompts)  # progress: each version's answers, then the judge's votes
    for k, version in enumerate((version_a, version_b)):
        def on_progress(done: float, total: int, offset: int = k * len(prompts)) -> None:
            if progress:
                progress("answer", offset + done, units)

        answers.append(answers_for(version, prompts, config, seed=seed, on_progress=on_progress,
                                   on_partial=on_progress, should_stop=should_stop))
    prompts, gone = answered_prompts(prompts, answers, config, "evaluation prompt")
    n = len(prompts)
    units = 3 * n
    with transaction.atomic():
        job = CompareJob.objects.create(
            version_a=version_a, version_b=version_b, prompt_ids=[p.pk for p in prompts], blind=True,
            params={"seed": seed, "sampling": config.to_dict(), "judge": judge_path, "evaluate": True},
            status=CompareJob.RUNNING, attempts=1, done=2 * n, total=2 * n, progress=2 / 3, started=timezone.now(),
            # no job evaluating it: it is this process's, never the queue's (a worker starting would resume it)
            claimed=timezone.now(), part_of=part_of or FOREGROUND, runner="" if part_of else this_process(),
            stage=f"answers stored; the judge votes on {n} comparisons",
        )
        comparisons = [
            Comparison.objects.create(job=job, prompt=p, response_a=answers[0][p.pk], response_b=answers[1][p.pk],
                                      # from the system's randomness, as a person's set draws them: a seeded draw
                                      # repeated its side pattern in every evaluation with that seed (0 by default),
                                      # so one set's reveals told people the sides of the next blind set
                                      left_is_a=secrets.randbelow(2) == 0)
            for p in prompts
        ]
    if gone:
        lifecycle.append_log(job, left_out_line(gone, config))
    account = judge_account(judge_path)
    voted = Vote.objects.filter(comparison__job=job, voter=account)
    tracker = Tracker(job)  # Cancel on the set's own page stops its judge too

    def stop() -> bool:
        return tracker.should_stop() or bool(should_stop and should_stop())

    def on_vote(done: int, total: int) -> None:
        # the set's own bar too: it read 100% from its first vote to its last
        tracker.report(progress=(2 * n + done) / units, stage=f"the judge voted on {done} of {total} comparisons")
        if progress:
            progress("judge", 2 * n + done, units)

    try:
        judge_comparisons(comparisons, judge, judge_path, account, should_stop=stop, on_vote=on_vote)
    except BaseException as exc:  # a cancel or a judge's failure: the set's page says its votes are partial
        partial = f"the judge stopped after {voted.count()} of {n} comparisons: its votes are partial"
        with contextlib.suppress(DatabaseError):  # (not in place of what went wrong, if that was the database)
            if isinstance(exc, JobCancelled):
                lifecycle.stopped(job, partial)
            elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C on the `evaluate` command
                lifecycle.interrupted(job, partial)
            else:
                # the stage in the same write as the end: a set cancelled meanwhile says so, one ended already keeps
                # its own stage (it was overwritten, under a state that said something else)
                lifecycle.fail(job, f"{partial}; {type(exc).__name__}: {exc}", stage=partial)
        raise
    lifecycle.finish(job)
    outcomes = voted.values_list("outcome", flat=True)
    summary = win_summary(outcomes, a=version_a.name, b=version_b.name)
    return Evaluation(summary=summary, job=job, answers_a=answers[0], answers_b=answers[1])
