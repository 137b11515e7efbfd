"""Import unlabelled pairs (JSONL, CSV or Parquet rows with prompt, response_a, response_b) into the queue.

One bad row stores nothing and names the file, line and field. Stopped with Ctrl-C, it keeps the
rows written so far (500 a transaction) and says how far it got; run it again to add the rest. Pairs already present are skipped.
"""
from contextlib import ExitStack

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
        ticks = []  # the bar's update, once the file is read and checked and writing begins

        def on_read(total: int) -> None:
            # the bar starts then, with the row count: a file refused while it is read leaves no empty bar on
            # stderr above its one-line error
            ticks.append(bars.enter_context(bar("import pairs", total=total)))

        try:
            with ExitStack() as bars:
                result = import_pairs(
                    options["file"], round_number=options["round"], labels_needed=options["labels_needed"],
                    progress=lambda n: ticks[0](n), on_read=on_read,
                )
        except ImportProblem as err:
            raise CommandError(err.report()) from None
        except ImportStopped as stopped:
            raise CommandError(f"{options['file']}: {stopped}") from None
        except OSError as err:
            raise CommandError(str(err)) from None
        except KeyboardInterrupt:
            # Ctrl-C while the rows are written ends in ImportStopped, which says what was kept; one that gets here
            # came while the file was read and checked, before the first row was stored (or after the last)
            if ticks:
                raise CommandError(f"{options['file']}: interrupted after its rows were stored: importing it again "
                                   "says what it holds (rows already stored are skipped)") from None
            raise CommandError(f"{options['file']}: interrupted while reading the file: nothing was stored") from None
        self.stdout.write(f"pairs from {options['file']}: {result}")
