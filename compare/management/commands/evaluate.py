"""Evaluate version B against version A: both answer the eval prompts, a judge votes blind; prints one JSON line."""
import json

from django.core.management.base import CommandError
from tqdm import tqdm

from compare.evaluation import evaluate
from compare.services import MAX_SEED, CompareError
from generation.models import ModelVersion
from jobs.lifecycle import JobCancelled
from judges import JudgeError
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--a", required=True, help="Version A (e.g. base).")
        parser.add_argument("--b", required=True, help="Version B (e.g. round-2).")
        parser.add_argument("--judge", required=True, help='The judge, e.g. "judges.rules:length_target".')
        parser.add_argument("--split", default="eval", choices=["train", "eval"])
        parser.add_argument("--tag", default="", help="Only prompts with this tag.")
        parser.add_argument("--limit", type=int, default=None, help="At most this many prompts.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the per-prompt sampling seeds.")

    def handle(self, *args, **o):
        versions = []
        for key in ("a", "b"):
            version = ModelVersion.objects.filter(name=o[key]).first()
            if version is None:
                known = ", ".join(ModelVersion.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"evaluate: --{key}: no version named {o[key]!r} (known: {known})")
            versions.append(version)
        if o["limit"] is not None and o["limit"] < 1:
            raise CommandError(f"evaluate: --limit must be at least 1 (got {o['limit']})")
        if not 0 <= o["seed"] <= MAX_SEED:
            raise CommandError(f"evaluate: --seed must be from 0 to {MAX_SEED:,} (got {o['seed']})")
        with tqdm(desc="answering", unit="step") as bar:
            def progress(stage, done, total):
                bar.set_description("answering" if stage == "answer" else "judging", refresh=False)
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = evaluate(*versions, o["judge"], split=o["split"], tag=o["tag"], limit=o["limit"],
                                  seed=o["seed"], progress=progress)
            except (JudgeError, CompareError) as exc:
                raise CommandError(f"evaluate: {exc}") from None
            except JobCancelled:  # Cancel on the set's page
                raise CommandError("evaluate: cancelled on the comparison set's page; the judge's votes so far are "
                                   "kept on the set") from None
            except Exception as exc:  # a version whose checkpoint cannot be loaded, say: one line, not a traceback
                raise CommandError(f"evaluate: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
        self.stdout.write(json.dumps(result.summary))
