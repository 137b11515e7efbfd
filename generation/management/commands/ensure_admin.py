"""Create the admin account once: password from PREFLOOP_ADMIN_PASSWORD, else generated and printed."""
import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("PREFLOOP_ADMIN_USER", "admin"))

    def handle(self, *args, **options):
        User = get_user_model()
        username = options["username"]
        try:  # the same checks as the admin's user form: letters, digits and @/./+/-/_, 150 at most
            User.username_validator(username)
            User._meta.get_field("username").run_validators(username)
            if not username:
                raise ValidationError("the username is empty")
        except ValidationError as exc:
            raise CommandError(f"ensure_admin: username {username[:40]!r}: {' '.join(exc.messages)}") from None
        existing = User.objects.filter(username=username).first()
        if existing is not None:
            if not (existing.is_active and existing.is_superuser):
                # "exists" said the admin was there, and no one could sign in to the admin with it. Said, not
                # refused: `make run` calls this at every start, and the account may have been turned off on purpose
                self.stderr.write(
                    f"ensure_admin: the account {username!r} exists but is not an active superuser, so it cannot "
                    "sign in to the admin: tick Active and Superuser status on it (/admin/auth/user/) if it should, "
                    "or pass --username (or PREFLOOP_ADMIN_USER) with a name no account has yet")
                return
            # its password was printed once, at the start that made it: the way back if it was lost (setting
            # PREFLOOP_ADMIN_PASSWORD now changes nothing, as an account that exists is never changed here)
            self.stdout.write(f"admin account {username!r} exists (password lost? .venv/bin/python manage.py "
                              f"changepassword {username})")
            return
        password = os.environ.get("PREFLOOP_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        if os.environ.get("PREFLOOP_ADMIN_PASSWORD"):
            # the settings' rules for every password (AUTH_PASSWORD_VALIDATORS): "x" made a superuser anyone could
            # guess, where the admin's own forms refuse it
            try:
                validate_password(password, User(username=username))
            except ValidationError as exc:
                raise CommandError(f"ensure_admin: PREFLOOP_ADMIN_PASSWORD: {' '.join(exc.messages)} (no account "
                                   "was made)") from None
        User.objects.create_superuser(username, password=password)
        shown = "from PREFLOOP_ADMIN_PASSWORD" if os.environ.get("PREFLOOP_ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"admin account created: user {username!r}, password {shown}"))
