"""Export the decided pairs in TRL format (prompt, chosen, rejected) as JSONL, Parquet or a Hugging Face data set
folder (--format hf: Parquet shards and a README.md dataset card; `datasets.load_dataset(OUT)` loads it).

One row per decided pair (majority of its labels; ties and "both bad" give no row), with preference_prob,
annotator ids and label times. OUT must not exist yet, or be a folder: the export then goes inside it under a new
name. Nothing already there is overwritten.
"""

from pathlib import Path

from django.core.management.base import CommandError
from tqdm import tqdm

from annotate.exporters import EXPORT_FORMATS, ExportError, ExportHooks, export_preferences
from annotate.hf_dataset import DEFAULT_LICENSE
from annotate.models import MAX_NUMBER, LabellingRound
from prefloop.commands import Command as PrefLoopCommand

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def _check_suffix(out: str, fmt: str) -> None:
    """A file name that says another format than --format is a mistake: `out.parquet --format jsonl` wrote JSON
    Lines under a Parquet name, which the Import page then refused as "not a Parquet file"."""
    path = Path(out)
    named = SUFFIXES.get(path.suffix.lower())
    if named is None or named == fmt:
        return
    try:
        if path.exists():  # an existing file or folder: the exporter says why not
            return
    except OSError:  # a name the system refuses (too long): the exporter says so
        return
    if fmt == "hf":
        raise CommandError(f"{out}: --format hf writes a folder, and this names a .{named} file: name a folder")
    raise CommandError(f"{out}: the name says {named}, but --format is {fmt}: pass --format {named}, "
                       f"or name the file {path.stem}.{fmt}")


def _why_not_written(path: Path, err: OSError) -> str:
    """The OS's reason, unless a folder on the way is a file: "File exists" then named no file that was there."""
    for parent in path.parents:
        try:
            if parent.exists():
                return err.strerror or str(err) if parent.is_dir() else f"{parent} is a file, not a folder"
        except OSError:
            break
    return err.strerror or str(err)


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("out", help="A new file (or folder, for --format hf), or an existing folder to write a "
                                        "new export inside; an existing file is never overwritten.")
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
        parser.add_argument("--round", type=int, action="append", default=None,
                            help="Only this labelling round (repeat for several).")
        parser.add_argument("--min-agreement", type=float, default=None,
                            help="Leave out pairs whose majority has a smaller vote share (0 to 1); gold pairs, "
                                 "decided by their known answer, stay in.")
        parser.add_argument("--include-automatic", dest="include_automatic", action="store_true", default=True,
                            help="Count labels from automatic labellers (the default).")
        parser.add_argument("--no-automatic", dest="include_automatic", action="store_false",
                            help="Count people's labels only.")
        parser.add_argument("--soft-labels", action="store_true",
                            help="preference_prob from the vote share and strengths, not the majority's strength.")
        parser.add_argument("--license", default=DEFAULT_LICENSE,
                            help="The licence field of the hf dataset card (e.g. cc-by-4.0, mit, other).")

    def handle(self, *args, **options):
        share, licence = options["min_agreement"], options["license"]
        if not licence or len(licence) > 100 or not licence.isprintable():
            raise CommandError("--license: expected up to 100 printable characters, e.g. cc-by-4.0")
        if share is not None and not 0 <= share <= 1:
            raise CommandError(f"--min-agreement must be between 0 and 1, got {share}")
        _check_suffix(options["out"], options["format"])
        for number in options["round"] or ():  # an unknown round is a typo, not an empty export
            if not 0 <= number <= MAX_NUMBER or not LabellingRound.objects.filter(number=number).exists():
                raise CommandError(f"--round {number}: no such labelling round")
        try:
            # the pairs read of how many it will read (reading is most of an export's time; the rows are written
            # at once after it): the bar counted pairs with no total, so no one could tell how much was left
            with tqdm(desc="export preferences", unit="pair", leave=False) as shown:
                def counted(total: int) -> None:
                    shown.total = total
                    shown.refresh()

                export = export_preferences(
                    options["out"], fmt=options["format"], rounds=options["round"], min_agreement=share,
                    include_automatic=options["include_automatic"], soft_labels=options["soft_labels"],
                    license=licence, progress=shown.update, hooks=ExportHooks(counted=counted),
                )
        except ExportError as err:
            raise CommandError(str(err)) from None
        except OSError as err:
            raise CommandError(f"{options['out']}: {_why_not_written(Path(options['out']), err)}") from None
        except KeyboardInterrupt:
            # the rows go to a temporary file renamed into place at the end, and write_rows removes it (and the
            # name it claimed) on the way out: nothing half-written is left under OUT
            raise CommandError(f"export_preferences: interrupted: nothing was written to {options['out']}") from None
        self.stdout.write(f"wrote {export.rows} preference rows to {export.path}")


