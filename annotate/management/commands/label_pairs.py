"""Let a judge label the queued pairs that still need labels, as its own automatic annotator account."""
import json

from django.core.management.base import CommandError
from django.db import DatabaseError
from tqdm import tqdm

from annotate.judging import judge_key, label_pairs
from annotate.models import Assignment
from judges import JudgeError
from prefloop.commands import Command as PrefLoopCommand


def give_back_lease(judge_path: str) -> int:
    """Give back the judge's open lease (its account holds one at most), as label_pairs does for a pair its judge
    failed on: left 'leased', the pair waited for the lease to run out before anyone else was given it. How many
    were given back."""
    leases = Assignment.objects.filter(state=Assignment.LEASED, annotator__annotator_profile__is_automatic=True,
                                       annotator__annotator_profile__judge_path=judge_key(judge_path))
    return leases.delete()[0]


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--judge", required=True, help='The judge, e.g. "judges.rules:length_target".')
        parser.add_argument("--limit", type=int, default=None, help="Label at most this many pairs.")

    def handle(self, *args, **o):
        if o["limit"] is not None and o["limit"] < 1:
            raise CommandError(f"label_pairs: --limit must be at least 1 (got {o['limit']})")
        labelled = 0

        def progress(stage, done, total):
            nonlocal labelled
            labelled = done
            bar.update(1)

        with tqdm(desc=f"labelling with {o['judge']}", unit="pair", total=o["limit"]) as bar:
            try:
                summary = label_pairs(o["judge"], limit=o["limit"], progress=progress)
            except JudgeError as exc:
                raise CommandError(f"label_pairs: {exc} (labels stored before it stay)") from None
            except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
                try:  # label_pairs gives its lease back as it stops; this is in case it could not
                    give_back_lease(o["judge"])
                    pending = "; the pair it was on goes back to the queue unlabelled"
                except DatabaseError as exc:
                    pending = (f"; its lease on the pair it was on could not be given back ({type(exc).__name__}): "
                               "the pair waits for the lease to run out")
                raise CommandError(f"label_pairs: interrupted: the labels stored before it are kept ({labelled} by "
                                   f"{o['judge']}){pending}") from None
        # withdrawn: pairs taken from the judge while it thought (their round closed, held back), passed over
        self.stdout.write(json.dumps({"judge": summary.judge, "labels": summary.labels, **summary.outcomes,
                                      "withdrawn": summary.withdrawn}))
