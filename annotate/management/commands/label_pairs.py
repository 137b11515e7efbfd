"""Let a judge label the queued pairs that still need labels, as its own automatic annotator account."""
import json

from django.core.management.base import CommandError
from tqdm import tqdm

from annotate.judging import label_pairs
from judges import JudgeError
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--judge", required=True, help='The judge, e.g. "judges.rules:length_target".')
        parser.add_argument("--limit", type=int, default=None, help="Label at most this many pairs.")

    def handle(self, *args, **o):
        if o["limit"] is not None and o["limit"] < 1:
            raise CommandError(f"label_pairs: --limit must be at least 1 (got {o['limit']})")
        with tqdm(desc=f"labelling with {o['judge']}", unit="pair", total=o["limit"]) as bar:
            try:
                summary = label_pairs(o["judge"], limit=o["limit"], progress=lambda stage, done, total: bar.update(1))
            except JudgeError as exc:
                raise CommandError(f"label_pairs: {exc} (labels stored before it stay)") from None
        self.stdout.write(json.dumps({"judge": summary.judge, "labels": summary.labels, **summary.outcomes}))
