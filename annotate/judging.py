"""Judges as annotators: the account a judge labels and votes as, and a judge labelling the queued pairs blind."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Q

from jobs.lifecycle import JobCancelled
from judges import Judge, load_judge, verdict
from prefcore.chat import prompt_text
from prefcore.outcomes import cut_rule, side_for_outcome
from prefloop.numerics import dtype_choice

from .models import AnnotatorProfile, Assignment
from .routing import route_pairs
from .services import next_pair_for, record_label

USERNAME_LENGTH = 150  # django.contrib.auth's User.username


def judge_username(judge_path: str) -> str:
    """"judge:<path>"; a path too long for a user name (150 characters) keeps its start and ends in a hash of the
    whole path, so two judges that differ only past the cut never share an account (the cut name gave the second
    judge the first one's labels: it then labelled nothing, "its" pairs being done)."""
    name = f"judge:{judge_path}"
    if len(name) <= USERNAME_LENGTH:
        return name
    digest = hashlib.sha256(judge_path.encode("utf-8")).hexdigest()[:20]
    return f"{name[:USERNAME_LENGTH - len(digest) - 1]}~{digest}"


def judge_account(judge_path: str):
    """The account a judge labels and votes as (judge_username(path), no password, marked automatic): found by the
    judge it is marked with, so an account named by the old cut keeps its own judge's labels."""
    profile = AnnotatorProfile.objects.select_related("user").filter(is_automatic=True, judge_path=judge_path).first()
    if profile is not None:
        return profile.user
    user, created = get_user_model().objects.get_or_create(username=judge_username(judge_path))
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    AnnotatorProfile.objects.update_or_create(user=user, defaults={"is_automatic": True, "judge_path": judge_path})
    return user


@dataclass
class LabelSummary:
    judge: str
    labels: int
    outcomes: dict


def label_pairs(judge_path: str, *, limit: int | None = None, judge: Judge | None = None,
                progress: Callable[[str, int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
                job=None) -> LabelSummary:
    """The judge labels queued pairs that still need labels (up to `limit`), blind, with sides randomised. `job`: only
    the pairs that generation job made (a loop's round: its judge labelled every open pair in the queue, those
    people were to label too).

    A judge that raises or returns no verdict stops here with a JudgeError naming it and the pair; the labels
    stored before stay, and the pair it failed on goes back to the queue. `should_stop()` is asked before and after
    each judge call: True raises JobCancelled, and the pair in flight goes back to the queue unlabelled.
    """
    judge = judge or load_judge(judge_path, dtype=dtype_choice())
    account = judge_account(judge_path)
    outcomes = dict.fromkeys(("a", "b", "tie", "both_bad"), 0)
    done = 0
    while limit is None or done < limit:
        if should_stop and should_stop():
            raise JobCancelled
        assignment = next_pair_for(account, only=None if job is None else Q(job=job))
        if assignment is None:
            break
        pair = assignment.pair
        left, right = (pair.response_a, pair.response_b) if assignment.left_is_a else (pair.response_b, pair.response_a)
        started = time.perf_counter()
        try:
            # a cut answer never beats a finished one, whatever the judge would say (prefcore.outcomes.cut_rule)
            seen = cut_rule(left.finish_reason == "length", right.finish_reason == "length") or verdict(
                judge, judge_path, prompt_text(pair.prompt.as_input), left.text, right.text, where=f"pair {pair.pk}")
            if should_stop and should_stop():
                raise JobCancelled
            side = side_for_outcome(seen, left_is_a=True)  # the judge saw the left answer as its "a"
            label = record_label(assignment, account, side, seconds=time.perf_counter() - started)
        except BaseException:
            # the judge failed, a cancel, Ctrl-C, a lost database: the pair goes back to the queue unlabelled (a
            # lease left open held it from everyone until it ran out)
            Assignment.objects.filter(pk=assignment.pk, state=Assignment.LEASED).delete()
            raise
        outcomes[label.choice] += 1
        done += 1
        if progress:
            progress("label", done, limit or done)
    route_pairs(judge_path)  # rounds this judge routes: its labels just measured, people get what it cannot decide
    return LabelSummary(judge=judge_path, labels=done, outcomes=outcomes)
