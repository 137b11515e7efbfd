"""Train one DPO round (on every decided pair so far, the starting version's new ones, a replay of both, or self-play
on reference answers) and register the new version, with a progress bar."""
import json

from django.core.management.base import CommandError
from kombu.exceptions import OperationalError as QueueUnreachable

from generation.models import ModelVersion
from generation.services import GenerationError
from prefloop.commands import Command as PrefLoopCommand
from prefloop.commands import in_foreground, job_bar, json_object_option
from training.models import TrainingRun
from training.services import DATA_CHOICES, TrainingError, run_training, start_training_run


class Command(PrefLoopCommand):
    help = __doc__

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Our --version names a model version; it replaces Django's "show the version" flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--version", help="Starting version (default: the current version).")
        parser.add_argument("--reference", default="base", choices=["base", "start"],
                            help="Reference model: the base (SFT) version (default) or the starting version.")
        parser.add_argument("--data", default="all", choices=DATA_CHOICES,
                            help="Train on every decided pair so far (default), only on the pairs of the starting "
                                 "version's labelling round (its round + 1), or on those and as many earlier pairs drawn at random (replay); "
                                 "spin: self-play on the train prompts' reference answers against the starting "
                                 "version's own answers, no labels.")
        parser.add_argument("--params", default="{}",
                            help='DPOConfig fields as JSON, e.g. \'{"beta": 0.1, "epochs": 2}\'.')
        parser.add_argument("--queue", action="store_true", help="Hand the run to the Celery worker instead.")

    def handle(self, *args, **o):
        params = json_object_option(o["params"], "train_round", "--params", '{"epochs": 2}')
        try:
            version = ModelVersion.objects.get(name=o["version"]) if o["version"] else None
            run = start_training_run(input_version=version, reference_choice=o["reference"],
                                     data_choice=o["data"], params=params,
                                     enqueue=o["queue"])
        except ModelVersion.DoesNotExist:
            raise CommandError(f"train_round: no version named {o['version']!r}") from None
        except (TrainingError, GenerationError, QueueUnreachable) as exc:  # the last: the run is ended failed, said why
            raise CommandError(f"train_round: {exc}") from None
        if o["queue"]:
            self.stdout.write(f"run {run.pk} queued")
            return
        # the run's own progress and stage, as its page shows them: a bar of DPO steps stood empty through the
        # reference log-probs and the warm start, and full while the new version was measured
        with job_bar(f"training run {run.pk}") as bar:
            def progress(step, total, metrics):
                bar.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}")
            with in_foreground("train_round", run):
                run = run_training(run.pk, progress=progress, on_report=bar)
            bar.ended(run)
        if run.status != TrainingRun.SUCCEEDED:
            raise CommandError(f"train_round: run {run.pk} {run.status}: {run.error or run.stage}")
        self.stdout.write(json.dumps({"run": run.pk, "version": run.output_version.name, **run.metrics}))
