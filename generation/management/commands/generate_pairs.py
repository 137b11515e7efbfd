"""Sample K responses per prompt with a version and queue pairs for labelling, with a progress bar."""
from django.core.management.base import CommandError
from kombu.exceptions import OperationalError as QueueUnreachable

from generation.backends.base import MAX_SEED, SamplingConfig
from generation.models import ModelVersion
from generation.services import (
    PAIRING_STRATEGIES,
    GenerationError,
    current_version,
    run_generation_job,
    start_generation_job,
)
from judges import JudgeError
from prefloop.commands import Command as PrefLoopCommand
from prefloop.commands import in_foreground, job_bar


class Command(PrefLoopCommand):
    help = __doc__

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Our --version names a model version; it replaces Django's "show the version" flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", help="Version name (default: the current version).")
        parser.add_argument("--prompts", type=int, default=32, help="How many prompts to sample (default 32).")
        parser.add_argument("--samples", type=int, default=SamplingConfig.n,
                            help=f"Samples per prompt, K (default {SamplingConfig.n}).")
        parser.add_argument("--split", default="train", choices=["train", "eval"])
        parser.add_argument("--tag", default="")
        parser.add_argument("--pairing", default="random", choices=list(PAIRING_STRATEGIES),
                            help="judge: the --judge ranks each prompt's samples and the best meets the worst.")
        parser.add_argument("--judge", default="", help="Judge for --pairing judge, e.g. judges.rules:length_target.")
        parser.add_argument("--with-reference", action="store_true",
                            help="Only prompts with a reference answer (for a self-play round: with --pairing none).")
        parser.add_argument("--temperature", type=float, default=SamplingConfig.temperature)
        parser.add_argument("--top-p", type=float, default=SamplingConfig.top_p)
        parser.add_argument("--max-new-tokens", type=int, default=SamplingConfig.max_new_tokens)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--queue", action="store_true", help="Hand the job to the Celery worker instead.")

    def handle(self, *args, **o):
        if not 0 <= o["seed"] <= MAX_SEED:  # as the form, the API and the other commands take it
            raise CommandError(f"generate_pairs: --seed must be from 0 to {MAX_SEED:,} (got {o['seed']})")
        try:
            version = ModelVersion.objects.get(name=o["version"]) if o["version"] else current_version()
        except ModelVersion.DoesNotExist:
            raise CommandError(f"generate_pairs: no version named {o['version']!r}") from None
        except GenerationError as exc:
            raise CommandError(f"generate_pairs: {exc}") from None
        try:
            config = SamplingConfig(n=o["samples"], temperature=o["temperature"], top_p=o["top_p"],
                                    max_new_tokens=o["max_new_tokens"], seed=o["seed"])
            job = start_generation_job(version, n_prompts=o["prompts"], config=config, split=o["split"],
                                       tag=o["tag"], pairing=o["pairing"], judge=o["judge"], enqueue=o["queue"],
                                       with_reference=o["with_reference"])
        except (GenerationError, ValueError, QueueUnreachable) as exc:  # the last: the job is ended failed, said why
            raise CommandError(f"generate_pairs: {exc}") from None
        if o["queue"]:
            self.stdout.write(f"job {job.pk} queued: {job.total} prompts with version {version.name!r}")
            return
        # the job's own progress and stage, as its page shows them: a bar of stored chunks stood at 0 through a job
        # of one chunk, and full while the round's pairs were readied
        with job_bar(f"sampling with {version.name}") as bar:
            try:
                with in_foreground("generate_pairs", job):
                    job = run_generation_job(job.pk, on_report=bar)
            except (GenerationError, JudgeError, OSError, ValueError) as exc:  # recorded on the job; the log has the trace
                raise CommandError(f"generate_pairs: job {job.pk} failed: {exc}") from None
            except Exception as exc:  # a checkpoint that cannot be loaded, say: one line, not a traceback
                raise CommandError(f"generate_pairs: job {job.pk} failed: {type(exc).__name__}: {exc}") from None
            bar.ended(job)
        if job.status != job.SUCCEEDED:  # cancelled from a page or the API meanwhile, say
            raise CommandError(f"generate_pairs: job {job.pk} {job.status}: {job.error or job.stage}")
        made = ("samples only (pairing none)" if job.params.get("pairing") == "none"
                else f"{job.pairs_made} pairs queued for labelling")
        self.stdout.write(f"job {job.pk}: {job.done} prompts, {made}")
