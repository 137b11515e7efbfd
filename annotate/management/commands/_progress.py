"""A tqdm bar on stderr for the import commands, and their one way of running."""
from contextlib import ExitStack, contextmanager

from django.core.management.base import CommandError
from tqdm import tqdm

from annotate.importers import ImportProblem, ImportStopped


@contextmanager
def bar(desc: str, total: int | None = None):
    with tqdm(total=total, desc=desc, unit="row", leave=False) as progress:
        yield progress.update


def run_import(desc: str, importer, path: str, **options):
    """`importer(path, **options, progress=, on_read=)` with a bar, its refusals as one-line CommandErrors.

    The bar starts once the file is read and checked, with the row count: a file refused while it is read leaves
    no empty bar on stderr above its one-line error. Ctrl-C while the rows are written ends in ImportStopped, which
    says what was kept; one that gets here came while the file was read and checked, before the first row was
    stored (or after the last)."""
    ticks = []  # the bar's update, once writing begins

    try:
        with ExitStack() as bars:
            def on_read(total: int) -> None:
                ticks.append(bars.enter_context(bar(desc, total=total)))

            return importer(path, **options, progress=lambda n: ticks[0](n), on_read=on_read)
    except ImportProblem as err:
        raise CommandError(err.report()) from None
    except ImportStopped as stopped:
        raise CommandError(f"{path}: {stopped}") from None
    except OSError as err:  # its str() was the OS's words ("[Errno 2] No such file or directory: '...'")
        raise CommandError(f"{err.filename or path}: {err.strerror or err}") from None
    except KeyboardInterrupt:
        if ticks:
            raise CommandError(f"{path}: interrupted after its rows were stored: importing it again says what it "
                               "holds (rows already stored are skipped)") from None
        raise CommandError(f"{path}: interrupted while reading the file: nothing was stored") from None
