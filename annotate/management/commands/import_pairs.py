"""Import unlabelled pairs (JSONL, CSV or Parquet rows with prompt, response_a, response_b) into the queue.

One bad row stores nothing and names the file, line and field. Stopped with Ctrl-C, it keeps the
rows written so far (500 a transaction) and says how far it got; run it again to add the rest. Pairs already present are skipped.
"""
from annotate.importers import import_pairs
from prefloop.commands import Command as PrefLoopCommand

from ._progress import run_import


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--round", type=int, default=None, help="Labelling round number (created if missing).")
        parser.add_argument("--labels-needed", type=int, default=None, help="Labels each pair needs.")

    def handle(self, *args, **options):
        result = run_import("import pairs", import_pairs, options["file"], round_number=options["round"],
                            labels_needed=options["labels_needed"])
        self.stdout.write(f"pairs from {options['file']}: {result}")
