"""Ready the open labelling queue for the current (or a named) version: near-duplicate pairs held back, and the
implicit-reward margins of the pairs in rounds ordered by them scored. Run it after a new version became current;
a generation job does the same for its own round when it ends. Ctrl-C stops between chunks; what was scored stays."""
import json

from django.core.management.base import CommandError
from tqdm import tqdm

from annotate.models import MAX_NUMBER, LabellingRound
from annotate.selection import prepare_queue
from generation.models import ModelVersion
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--under", default="", help="The version to score under (default: the current one).")
        parser.add_argument("--round", type=int, action="append", default=None,
                            help="Only this round's open pairs (repeatable; default: every open round).")

    def handle(self, *args, **o):
        version = (ModelVersion.objects.filter(name=o["under"]) if o["under"]
                   else ModelVersion.objects.filter(is_current=True)).first()
        if version is None:
            raise CommandError(f"score_margins: no version named {o['under']!r}" if o["under"]
                               else "score_margins: there is no current version (run bootstrap_model first)")
        rounds = None
        if o["round"]:
            numbers = [n for n in o["round"] if 0 <= n <= MAX_NUMBER]
            rounds = list(LabellingRound.objects.filter(number__in=numbers))
            unknown = sorted(set(o["round"]) - {r.number for r in rounds})
            if unknown:
                raise CommandError(f"score_margins: --round {unknown[0]}: no such round")
        scored = [0, None]  # pairs scored so far, of how many: what a Ctrl-C keeps
        with tqdm(desc=f"margins under {version.name}", unit="pair") as bar:
            def progress(done: int, total: int) -> None:
                scored[:] = done, total
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                prepared = prepare_queue(version, rounds=rounds, progress=progress)
            except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
                done, total = scored
                if total is None:
                    raise CommandError("score_margins: interrupted before any margin was scored; running it again "
                                       "does the whole step") from None
                raise CommandError(f"score_margins: interrupted: the margins of the {done} of {total} pairs scored "
                                   f"under {version.name} before it are kept (stored a chunk at a time); running it "
                                   "again scores the rest") from None
        self.stdout.write(json.dumps({"version": prepared.version, "held_back": prepared.held_back,
                                      "scored": prepared.scored}))
