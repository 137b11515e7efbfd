"""The base of PrefLoop's management commands: before a command runs, every text option and argument is checked for
what no database stores and no name holds (a NUL character; a lone surrogate, which is how Python passes on bytes
the shell could not decode as UTF-8), so such input ends in one clear line instead of a traceback."""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from jobs import lifecycle
from jobs.models import FOREGROUND, Job
from jobs.runner import this_process
from prefcore.rows import DuplicateKey, argument_problem, read_negative_numbers, unique_keys


class _OneLine(logging.Filter):
    """At the command line a failed job's logged traceback is one line (the job records its error, the command ends
    with it in a CommandError); `--verbosity 2` shows the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno >= logging.ERROR:
            kind, exc = record.exc_info[0], record.exc_info[1]
            record.msg = f"{record.getMessage()}: {kind.__name__ if kind else 'error'}: {exc} (--verbosity 2 shows where)"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def json_object_option(value: str, command: str, option: str, example: str) -> dict:
    """A command-line option that holds a JSON object, or a CommandError naming the option: bad JSON, JSON nested
    deeper than Python's parser goes, a number of thousands of digits, a key given twice in one object (json would
    keep the last without a word), or a value other than an object."""
    try:
        parsed = json.loads(value, object_pairs_hook=unique_keys)
    except DuplicateKey as exc:
        raise CommandError(f"{command}: {option}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{command}: {option} is not JSON: {exc}") from None
    except RecursionError:
        raise CommandError(f"{command}: {option} is JSON nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise CommandError(f"{command}: {option} holds a value no setting takes: {exc}") from None
    if not isinstance(parsed, dict):
        raise CommandError(f"{command}: {option} must be a JSON object, e.g. '{example}' (got {value[:40]})")
    return parsed


class Command(BaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        return read_negative_numbers(super().create_parser(prog_name, subcommand, **kwargs))  # --top-p -1e-5

    def execute(self, *args, **options):
        for name, value in [*((f"argument {i + 1}", a) for i, a in enumerate(args)), *options.items()]:
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str) and (problem := argument_problem(item)):
                    label = name if name.startswith("argument") else f"--{name.replace('_', '-')}"
                    raise CommandError(f"{label} {problem}: {item.encode('utf-8', 'backslashreplace')[:60]!r}")
        if options.get("verbosity", 1) >= 2:
            return super().execute(*args, **options)
        handlers, one_line = logging.getLogger().handlers, _OneLine()
        for handler in handlers:
            handler.addFilter(one_line)
        try:
            return super().execute(*args, **options)
        finally:
            for handler in handlers:
                handler.removeFilter(one_line)


@contextmanager
def in_foreground(command: str, job: Job) -> Iterator[None]:
    """Run `job` in this process: Ctrl-C ends it (and the jobs inside it) cancelled, in one line. Left running, the
    next worker to start would have taken it for a lost worker's job and resumed it.

    The job is this process's (part_of "foreground", as run_loop's and evaluate's are): a worker starting while it runs
    (`make run`'s, a restarted one) took a running job no loop owns for one a lost worker left, and ran it a second
    time beside this one. A job inside another's (part_of a job's key) stays that job's."""
    if not job.part_of:
        type(job).objects.filter(pk=job.pk, part_of="").update(part_of=FOREGROUND)
        job.part_of = FOREGROUND
    # which process: killed outright (kill -9, out of memory), it ends nothing itself, and the next worker to start
    # on this machine, or a Cancel, ends its job at once instead of after minutes of silence
    job.runner = this_process()
    type(job).objects.filter(pk=job.pk).update(runner=job.runner)
    try:
        yield
    except KeyboardInterrupt:
        lifecycle.interrupted(job, "Ctrl-C at the command line")  # unless the job recorded its own (what it kept)
        raise CommandError(f"{command}: interrupted: {job._meta.verbose_name} {job.pk} is cancelled "
                           f"({job.stage})") from None


class JobBar:
    """A percent bar on stderr that shows a foreground job's own progress and stage, as its page does: pass it as
    the job's `on_report` (jobs.lifecycle.Tracker). Short of 100% until `ended(job)` finds it succeeded
    (jobs.models.Job.percent: the work after the last counted unit, measuring a version or readying a round's pairs,
    is still work)."""

    STAGE_SHOWN = 60  # characters of the stage in the bar's description

    def __init__(self, bar, prefix: str):
        self.bar, self.prefix = bar, prefix

    def __call__(self, fraction: float, stage: str) -> None:
        if stage:
            shown = stage if len(stage) <= self.STAGE_SHOWN else stage[: self.STAGE_SHOWN - 1] + "…"
            self.bar.set_description(f"{self.prefix}: {shown}")
        percent = min(99, math.floor(100 * min(1.0, max(0.0, fraction)) + 1e-9))
        if percent > self.bar.n:  # a resumed job's bar may start behind it: it never goes back
            self.bar.update(percent - self.bar.n)

    def ended(self, job) -> None:
        """Full if `job` (as its run returned it) succeeded; left where it stood if it did not."""
        if job.status == job.SUCCEEDED:
            self.bar.update(100 - self.bar.n)


@contextmanager
def job_bar(prefix: str) -> Iterator[JobBar]:
    with tqdm(total=100, desc=prefix, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}") as bar:
        yield JobBar(bar, prefix)
