"""Load the small demo prompt set (64 train and 16 eval prompts). Running it again adds nothing."""
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import CommandError

from prefloop.commands import Command as PrefLoopCommand

DEMO = Path(__file__).resolve().parents[2] / "demo"


class Command(PrefLoopCommand):
    help = __doc__

    def handle(self, *args, **options):
        # import_prompts says itself what a Ctrl-C while it reads or writes kept; one between the two files (or
        # before the first) gets here
        try:
            call_command("import_prompts", str(DEMO / "prompts.jsonl"), split="train", tag="demo",
                         stdout=self.stdout)
            call_command("import_prompts", str(DEMO / "eval_prompts.jsonl"), split="eval", tag="demo",
                         stdout=self.stdout)
        except KeyboardInterrupt:
            raise CommandError("load_demo: interrupted: the prompts stored before it are kept; running it again adds "
                               "the rest (prompts already present are skipped)") from None
