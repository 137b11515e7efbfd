"""Import unlabelled pairs (JSONL, CSV or Parquet rows with prompt, response_a, response_b) into the queue.

One bad row stores nothing and names the file, line and field. Stopped with Ctrl-C, it keeps the
rows written so far (500 a transaction) and says how far it got; run it again to add the rest. Pairs already present are skipped.
"""
from django.core.management.base import CommandError

from annotate.importers import ImportProblem, ImportStopped, import_pairs
from prefloop.commands import Command as PrefLoopCommand

from ._progress import bar


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--round", type=int, default=None, help="Labelling round number (created if missing).")
        parser.add_argument("--labels-needed", type=int, default=None, help="Labels each pair needs.")

    def handle(self, *args, **options):
        try:
            with bar("import pairs") as progress:
                result = import_pairs(
                    options["file"], round_number=options["round"], labels_needed=options["labels_needed"],
                    progress=progress,
                )
        except ImportProblem as err:
            raise CommandError(err.report()) from None
        except ImportStopped as stopped:
            raise CommandError(f"{options['file']}: {stopped}") from None
        except OSError as err:
            raise CommandError(str(err)) from None
        self.stdout.write(f"pairs from {options['file']}: {result}")
