"""Make an API token for an account and print it (once: only its digest is stored), for scripts that set up a
pipeline without a browser. The account page and the admin make tokens too."""
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from api.tokens import TokenError, create_token
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("username", help="The account the token acts as (staff for the staff operations).")
        parser.add_argument("--name", default="made at the command line",
                            help="What the token is for, as the account page lists it.")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"create_token: no account named {options['username'][:60]!r}")
        if not user.is_active:
            raise CommandError(f"create_token: account {user.username!r} is disabled")
        try:
            _, token = create_token(user, options["name"])
        except TokenError as exc:
            raise CommandError(f"create_token: {exc}") from None
        self.stdout.write(token)
