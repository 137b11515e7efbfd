"""Evaluate version B against version A: both answer the eval prompts, a judge votes blind; prints one JSON line."""
import json

from django.core.management.base import CommandError
from django.db import DatabaseError
from tqdm import tqdm

from compare.evaluation import evaluate
from compare.models import CompareJob, Vote
from compare.services import MAX_PROMPTS, MAX_SEED, CompareError
from generation.models import ModelVersion
from jobs.lifecycle import JobCancelled
from judges import JudgeError
from prefloop.commands import Command as PrefLoopCommand


def _kept(reached: str | None, versions: list[ModelVersion], after: int) -> str:
    """What an evaluation interrupted once it `reached` a stage keeps (compare.evaluation.evaluate stores as it goes);
    `after`: the last comparison set's id before it began, so the set it made, if any, is found and named."""
    made = (CompareJob.objects.filter(pk__gt=after, version_a=versions[0], version_b=versions[1],
                                      params__evaluate=True).order_by("-pk").first())
    if made is not None:  # the judge was voting: evaluate ended the set cancelled, its votes partial
        votes = Vote.objects.filter(comparison__job=made).count()
        return (f"the judge's {votes} vote{'s' if votes != 1 else ''} so far {'are' if votes != 1 else 'is'} kept "
                f"on comparison set {made.pk} (cancelled, its votes partial); the versions' answers are kept, and "
                "a run with the same settings reuses them")
    if reached is not None:
        return "the answers stored so far are kept, and a run with the same settings reuses them"
    return "nothing was stored (the versions had not begun to answer)"


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
        # bounded as compare_versions bounds its --limit: a number past what the database takes (10**30) ended in
        # "IntegrityError: datatype mismatch" from the prompts' query
        if o["limit"] is not None and not 1 <= o["limit"] <= MAX_PROMPTS:
            raise CommandError(f"evaluate: --limit must be between 1 and {MAX_PROMPTS} (got {o['limit']})")
        if not 0 <= o["seed"] <= MAX_SEED:
            raise CommandError(f"evaluate: --seed must be from 0 to {MAX_SEED:,} (got {o['seed']})")
        reached = None  # the stage the evaluation got to ("answer", "judge"): what a Ctrl-C keeps
        after = CompareJob.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

        with tqdm(desc="answering", unit="step") as bar:
            def progress(stage, done, total):
                nonlocal reached
                reached = stage
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
            except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
                try:
                    kept = _kept(reached, versions, after)
                except DatabaseError:  # (the line still comes, if less precise)
                    kept = "what was stored before it is kept"
                raise CommandError(f"evaluate: interrupted: {kept}") from None
            except Exception as exc:  # a version whose checkpoint cannot be loaded, say: one line, not a traceback
                raise CommandError(f"evaluate: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
        self.stdout.write(json.dumps(result.summary))
