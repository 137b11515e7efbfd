"""Load the small demo prompt set (64 train and 16 eval prompts). Running it again adds nothing."""
from pathlib import Path

from django.core.management import call_command

from prefloop.commands import Command as PrefLoopCommand

DEMO = Path(__file__).resolve().parents[2] / "demo"


class Command(PrefLoopCommand):
    help = __doc__

    def handle(self, *args, **options):
        call_command("import_prompts", str(DEMO / "prompts.jsonl"), split="train", tag="demo", stdout=self.stdout)
        call_command("import_prompts", str(DEMO / "eval_prompts.jsonl"), split="eval", tag="demo", stdout=self.stdout)
