"""`manage.py compare_versions A B`: both versions answer the eval split (or one prompt) now, in this process."""
from django.core.management.base import CommandError

from compare import services
from generation.models import ModelVersion
from prefloop.commands import Command as PrefLoopCommand
from prefloop.commands import in_foreground, job_bar


class Command(PrefLoopCommand):
    help = "Answer a comparison set with two versions here (no worker) and print where to vote on it."

    def add_arguments(self, parser):
        parser.add_argument("version_a")
        parser.add_argument("version_b")
        parser.add_argument("--limit", type=int, default=8, help="eval prompts to answer (default 8)")
        parser.add_argument("--prompt", default="", help="one prompt instead of the eval split")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--side-by-side", action="store_true", help="not blind: names shown, no votes")

    def handle(self, *args, **opts):
        versions = []
        for name in (opts["version_a"], opts["version_b"]):
            version = ModelVersion.objects.filter(name=name).first()
            if version is None:
                known = ", ".join(ModelVersion.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"no version named {name!r} (known: {known})")
            versions.append(version)
        try:
            job = services.start_compare_job(
                *versions, text=opts["prompt"], limit=opts["limit"], seed=opts["seed"],
                blind=not opts["side_by_side"], sampling={"max_new_tokens": opts["max_new_tokens"]}, enqueue=False,
            )
            # the set's own progress and stage, as its page shows them: a bar of stored answers stood still while a
            # version answered its prompts, all in one batch
            with job_bar(f"comparison set {job.pk}") as bar:
                with in_foreground("compare_versions", job):
                    job = services.run_compare_job(job.pk, on_report=bar)
                bar.ended(job)
        except (services.CompareError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except CommandError:
            raise
        except Exception as exc:  # recorded on the job too
            raise CommandError(f"answering failed: {type(exc).__name__}: {exc}") from None
        if job.status != job.SUCCEEDED:  # cancelled from a page or the API meanwhile, say
            raise CommandError(f"comparison set {job.pk} {job.status}: {job.error or job.stage}")
        self.stdout.write(f"comparison set {job.pk}: {job.comparisons.count()} comparisons; vote at /compare/sets/{job.pk}/")
