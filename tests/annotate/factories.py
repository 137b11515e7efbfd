"""Rows for annotate tests, made directly (no model runs): prompts, responses, pairs, rounds, users."""
from __future__ import annotations

import itertools
import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from annotate.models import Assignment, LabellingRound, Pair
from generation.models import Prompt, Response

_n = itertools.count(1)


def make_round(number: int | None = None, **fields) -> LabellingRound:
    return LabellingRound.objects.create(number=next(_n) + 1000 if number is None else number, **fields)


def make_prompt(text: str | None = None, messages: list | None = None, **fields) -> Prompt:
    text = text or f"Prompt number {next(_n)}: explain something."
    return Prompt.objects.create(text=text, messages=messages, **fields)


def make_pair(
    prompt: Prompt | None = None, text_a: str | None = None, text_b: str | None = None, *,
    round: LabellingRound | None = None, labels_needed: int = 1, **fields,
) -> Pair:
    prompt = prompt or make_prompt()
    n = next(_n)
    a = Response.objects.create(prompt=prompt, text=text_a or f"Answer A{n}", source="test")
    b = Response.objects.create(prompt=prompt, text=text_b or f"Answer B{n}", source="test")
    return Pair.objects.create(prompt=prompt, response_a=a, response_b=b, round=round, labels_needed=labels_needed,
                               **fields)


def make_pairs(count: int, **fields) -> list[Pair]:
    return [make_pair(**fields) for _ in range(count)]


def make_user(name: str | None = None, password: str | None = None, **fields):
    """A user; without a password (hashing one costs a noticeable fraction of a second) unless given."""
    return get_user_model().objects.create_user(name or f"user{next(_n)}", password=password, **fields)


def make_staff(name: str | None = None, *perms: str, password: str | None = None):
    """A staff member, not a superuser, given the admin permissions `perms` ("app.codename") and no other: staff
    status alone lets a person look, never act (prefloop.access.may)."""
    person = make_user(name, password=password, is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        person.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return person


def shown_lease(html: str) -> int:
    """The lease a label page names for the pair on screen (it never shows the pair's id: services.named)."""
    return int(re.search(r'data-lease="(\d+)"', html).group(1))


def shown_pair(html: str) -> int:
    """The pair a label page shows, looked up from the lease it names."""
    return Assignment.objects.get(pk=shown_lease(html)).pair_id


def lease_of(pair, user=None) -> int:
    """The id of the lease (the handle the label page names) of `pair` (or its id) to `user`, or its only lease."""
    leases = Assignment.objects.filter(pair_id=getattr(pair, "pk", pair))
    return (leases.filter(annotator=user) if user is not None else leases).get().pk
