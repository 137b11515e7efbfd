"""Judges as annotators: the account a judge labels and votes as, and a judge labelling the queued pairs blind."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Q

from jobs.lifecycle import JobCancelled
from judges import Judge, JudgeError, canonical_path, load_judge, verdict
from prefcore.chat import prompt_text
from prefcore.outcomes import cut_rule, side_for_outcome
from prefloop.numerics import dtype_choice

from .models import AnnotatorProfile, Assignment
from .routing import route_pairs
from .services import LabelError, next_pair_for, record_label

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


def judge_key(judge_path: str) -> str:
    """The one spelling a judge's account, agreement and routing are kept under (judges.canonical_path): under the
    name as typed, "judges.rules.length_target" labelled as another judge than the "judges.rules:length_target" a
    round routes by, and the round was never routed. A name that is no judge path (a script's own callable passed
    beside it) is kept as it is, stripped."""
    try:
        return canonical_path(judge_path)
    except JudgeError:
        return str(judge_path).strip()


def judge_account(judge_path: str):
    """The account a judge labels and votes as (judge_username(path), no password, marked automatic): found by the
    judge it is marked with (its judge_key), so an account named by the old cut keeps its own judge's labels. An
    account marked with this very spelling before judges were kept under one is marked with that one and kept."""
    path = judge_key(judge_path)
    accounts = AnnotatorProfile.objects.select_related("user").filter(is_automatic=True)
    profile = accounts.filter(judge_path=path).first()
    if profile is None and judge_path != path:
        profile = accounts.filter(judge_path=judge_path).first()
        if profile is not None:
            profile.judge_path = path
            profile.save(update_fields=["judge_path"])
    if profile is not None:
        return profile.user
    user, created = get_user_model().objects.get_or_create(username=judge_username(path))
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    AnnotatorProfile.objects.update_or_create(user=user, defaults={"is_automatic": True, "judge_path": path})
    return user


@dataclass
class LabelSummary:
    judge: str
    labels: int
    outcomes: dict
    withdrawn: int = 0  # pairs taken from the judge while it thought (their round closed, held back): not labelled


def label_pairs(judge_path: str, *, limit: int | None = None, judge: Judge | None = None,
                progress: Callable[[str, int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
                job=None) -> LabelSummary:
    """The judge labels queued pairs that still need labels (up to `limit`), blind, with sides randomised. `job`: only
    the pairs that generation job made (a loop's round: its judge labelled every open pair in the queue, those
    people were to label too).

    A judge that raises or returns no verdict stops here with a JudgeError naming it and the pair; the labels
    stored before stay, and the pair it failed on goes back to the queue. `should_stop()` is asked before and after
    each judge call: True raises JobCancelled, and the pair in flight goes back to the queue unlabelled. However the
    batch ends, the rounds this judge routes are routed, so people are given what it labelled.

    A pair taken from the judge while it thought (its round closed, it was held back or decided, its lease ended) is
    passed over: its label is refused, the lease is given back and the judge goes on to the next pair.
    """
    judge = judge or load_judge(judge_path, dtype=dtype_choice())
    path = judge_key(judge_path)
    account = judge_account(judge_path)
    outcomes = dict.fromkeys(("a", "b", "tie", "both_bad"), 0)
    done = 0
    withdrawn: list[int] = []  # never offered to the judge again in this batch
    try:
        while limit is None or done < limit:
            if should_stop and should_stop():
                raise JobCancelled
            # the withdrawn pairs apart from `only`: given as `only`, they stopped the gold pairs mixed into the queue
            assignment = next_pair_for(account, only=None if job is None else Q(job=job), exclude=withdrawn)
            if assignment is None:
                break
            pair = assignment.pair
            left, right = (pair.response_a, pair.response_b) if assignment.left_is_a else (pair.response_b, pair.response_a)
            started = time.perf_counter()
            try:
                # a cut answer never beats a finished one, whatever the judge would say, unless it finds both bad
                # (prefcore.outcomes.cut_rule)
                seen = cut_rule(left.finish_reason == "length", right.finish_reason == "length", verdict(
                    judge, judge_path, prompt_text(pair.prompt.as_input), left.text, right.text, where=f"pair {pair.pk}"))
                if should_stop and should_stop():
                    raise JobCancelled
                side = side_for_outcome(seen, left_is_a=True)  # the judge saw the left answer as its "a"
                label = record_label(assignment, account, side, seconds=time.perf_counter() - started)
            except LabelError:
                # the pair was withdrawn while the judge thought (its round closed, it was held back or decided, the
                # lease ended): the judge did not fail, so the batch goes on (this failed a loop run, and the command
                # with a traceback, whenever staff closed a round)
                Assignment.objects.filter(pk=assignment.pk, state=Assignment.LEASED).delete()
                withdrawn.append(pair.pk)
                continue
            except BaseException:
                # the judge failed, a cancel, Ctrl-C, a lost database: the pair goes back to the queue unlabelled (a
                # lease left open held it from everyone until it ran out)
                Assignment.objects.filter(pk=assignment.pk, state=Assignment.LEASED).delete()
                raise
            outcomes[label.choice] += 1
            done += 1
            if progress:
                progress("label", done, limit or done)
    except BaseException as exc:
        _route_after_stop(path, exc)
        raise
    route_pairs(path)  # rounds this judge routes: its labels just measured, people get what it cannot decide
    return LabelSummary(judge=path, labels=done, outcomes=outcomes, withdrawn=len(withdrawn))


def _route_after_stop(judge_path: str, stopped_by: BaseException) -> None:
    """Route the judge's rounds after its batch stopped early: a routing round serves people only the pairs routed
    to them, so what the judge labelled before it stopped waited, unserved, for its next batch. A failure here is
    noted on the error that stopped the batch, which is still the one raised."""
    try:
        route_pairs(judge_path)
    except Exception as exc:
        stopped_by.add_note(f"routing the rounds of judge {judge_path!r} after it stopped failed too: "
                            f"{type(exc).__name__}: {exc}")
