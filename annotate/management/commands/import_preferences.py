"""Import labelled preferences: TRL, Anthropic HH-RLHF transcripts or UltraFeedback-binarised (JSONL, CSV, Parquet).

Each row becomes a pair (chosen as A, rejected as B) with a label by the "import" account. One bad row stores nothing
and names the file, line and field. Stopped with Ctrl-C, it keeps the rows written so far (500 a transaction) and
says how far it got; run it again to add the rest. Rows already present are skipped.
"""
from annotate.importers import import_preferences
from prefcore.rows import FORMATS
from prefloop.commands import Command as PrefLoopCommand

from ._progress import run_import


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, default="auto")
        parser.add_argument("--round", type=int, default=None,
                            help="Labelling round number (created if missing); without it, each row's own 'round' "
                                 "(as export_preferences writes it), if any.")

    def handle(self, *args, **options):
        result = run_import("import preferences", import_preferences, options["file"], fmt=options["format"],
                            round_number=options["round"])
        self.stdout.write(f"preferences from {options['file']}: {result}")
