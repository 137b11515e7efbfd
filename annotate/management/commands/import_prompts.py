"""Import prompts from a JSONL, CSV or Parquet file with a `prompt` column (text or a message list).

One bad row stores nothing and names the file, line and field. Stopped with Ctrl-C, it keeps the
rows written so far (500 a transaction) and says how far it got; run it again to add the rest. Prompts already present are skipped.
"""
from annotate.importers import import_prompts
from prefloop.commands import Command as PrefLoopCommand

from ._progress import run_import


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--split", choices=["train", "eval"], default="train")
        parser.add_argument("--tag", default="")

    def handle(self, *args, **options):
        result = run_import("import prompts", import_prompts, options["file"], split=options["split"], tag=options["tag"])
        self.stdout.write(f"prompts from {options['file']}: {result}")
