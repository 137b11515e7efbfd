"""Create the admin account once: password from PREFLOOP_ADMIN_PASSWORD, else generated and printed."""
import os
import secrets

from django.contrib.auth import get_user_model
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
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin account {username!r} exists")
            return
        password = os.environ.get("PREFLOOP_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username, password=password)
        shown = "from PREFLOOP_ADMIN_PASSWORD" if os.environ.get("PREFLOOP_ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"admin account created: user {username!r}, password {shown}"))
