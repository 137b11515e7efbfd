"""Make, check and revoke personal API tokens.

A token is 'pfl_' and 43 random URL-safe characters (256 bits). Only its SHA-256 is kept: with that much entropy a
plain digest cannot be reversed or guessed, and it lets a request's token be looked up in one indexed query.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.hashers import is_password_usable
from django.db import transaction
from django.utils import timezone

from .models import ApiToken

PREFIX = "pfl_"
MAX_TOKEN_LENGTH = 200
LAST_USED_EVERY = timedelta(minutes=1)  # last_used is written at most this often per token, not on every request


class TokenError(Exception):
    """A token that cannot be made (bad name); the message is for the person."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create_token(user, name: str) -> tuple[ApiToken, str]:
    """A new token for this person: the stored row and the token itself, which is never available again."""
    name = (name or "").strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise TokenError("token name: expected 1 to 100 printable characters, e.g. 'labelling pipeline'")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(user=user, name=name, prefix=token[: len(PREFIX) + 6], digest=digest(token))
    return row, token


def revoke_token(row: ApiToken) -> bool:
    """Refuse the token from now on (kept, revoked, so the page and the admin show when); False when it was revoked
    already (its time of revoking is kept)."""
    return bool(ApiToken.objects.filter(pk=row.pk, revoked__isnull=True).update(revoked=timezone.now()))


def note_lost_access(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user model: whether the save stores a new password (the change page, a reset, the admin,
    `changepassword`, a password disabled) or disables the account, to revoke the person's live tokens once it is
    stored (revoke_on_lost_access). A token is a second password: one made from a stolen session kept working after
    the victim changed theirs, and after an administrator disabled the account and enabled it again (a token was
    refused only while its account was disabled).

    Django marks a password set with set_password (the raw text kept until saved), and unmarks it for the re-hash it
    does at sign-in when its hasher's settings move on (an upgrade): that is no new password, and must not revoke
    every token at everyone's next sign-in. A password made unusable is never marked, and always counts."""
    instance._revoke_tokens = False
    if instance.pk is None:
        return

    def saved(field: str) -> bool:
        return update_fields is None or field in update_fields

    new_password = saved("password") and (getattr(instance, "_password", None) is not None
                                          or not is_password_usable(instance.password))
    disabled = saved("is_active") and not instance.is_active
    if not (new_password or disabled):
        return
    stored = type(instance).objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    if stored is not None:
        instance._revoke_tokens = (new_password and stored[0] != instance.password) or (disabled and stored[1])


def revoke_on_lost_access(sender, instance, **kwargs) -> None:
    """post_save of the user model: the new password (or the disabling) is written; its owner's tokens end with the
    transaction (at once outside one). Revoked before the write, a token made in between from the old session
    outlived it."""
    if getattr(instance, "_revoke_tokens", False):
        instance._revoke_tokens = False
        user_id = instance.pk
        transaction.on_commit(lambda: ApiToken.objects.filter(user_id=user_id, revoked__isnull=True).update(
            revoked=timezone.now()))


def user_for_token(token: str):
    """The active user a live token belongs to, or None (unknown, revoked, or its user is inactive)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX):
        return None
    row = ApiToken.objects.select_related("user").filter(digest=digest(token), revoked__isnull=True).first()
    if row is None or not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used is None or now - row.last_used > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=row.pk).update(last_used=now)
    return row.user
