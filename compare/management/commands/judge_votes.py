"""`manage.py judge_votes --judge dotted.path`: an automatic judge votes on the comparisons of blind sets it has not
voted on yet. A side-by-side set shows the versions' names, and people's votes on it are refused as unfair; a
judge's are left out the same way (they would count on the leaderboard's automatic view)."""
from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError
from tqdm import tqdm

from annotate.judging import judge_account
from annotate.models import MAX_ID
from compare import services
from compare.models import CompareJob, Comparison, Vote
from prefloop.commands import Command as PrefLoopCommand


class Command(PrefLoopCommand):
    help = "Let a judge (a callable named by dotted path) vote on comparisons; its votes are marked automatic."

    def add_arguments(self, parser):
        parser.add_argument("--judge", default=settings.PREFLOOP_COMPARE_JUDGE,
                            help="dotted path of the judge (default: PREFLOOP_COMPARE_JUDGE)")
        parser.add_argument("--set", type=int, dest="job", help="only this comparison set (a blind one)")

    def handle(self, *args, **opts):
        if not opts["judge"]:
            raise CommandError("name a judge with --judge package.module.function (or set PREFLOOP_COMPARE_JUDGE)")
        comparisons = Comparison.objects.select_related("prompt", "response_a", "response_b").order_by("pk")
        if opts["job"] is not None:  # --set 0 is a set that does not exist, not "every set"
            job = CompareJob.objects.filter(pk=opts["job"]).first() if 1 <= opts["job"] <= MAX_ID else None
            if job is None:
                raise CommandError(f"--set {opts['job']}: no such comparison set")
            if not job.blind:
                raise CommandError(f"--set {opts['job']}: a side-by-side set shows the versions' names; votes on it "
                                   "would not be fair (start a blind set to vote on)")
            comparisons = comparisons.filter(job_id=opts["job"])
        comparisons = comparisons.exclude(job__blind=False)
        voter = before = None
        try:
            judge = services.load_judge(opts["judge"])
            voter = judge_account(opts["judge"])
            before = Vote.objects.filter(voter=voter).count()
            todo = comparisons.exclude(votes__voter=voter)
            with tqdm(total=todo.count(), desc="judging", unit="comparison") as bar:
                votes = services.judge_comparisons(todo, judge, opts["judge"], voter,
                                                   on_vote=lambda done, total: bar.update(done - bar.n))
        except (services.CompareError, services.JudgeError) as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
            if before is None:
                raise CommandError("judge_votes: interrupted before the judge voted: nothing was stored") from None
            try:
                new = Vote.objects.filter(voter=voter).count() - before
                kept = f"its {new} new vote{'s' if new != 1 else ''} before it {'are' if new != 1 else 'is'} kept"
            except DatabaseError:  # (the line still comes, if less precise)
                kept = "its votes before it are kept"
            raise CommandError(f"judge_votes: interrupted: {opts['judge']}: {kept} (each is stored as it is cast); "
                               "running it again votes on the rest") from None
        self.stdout.write(f"{opts['judge']}: {len(votes)} new vote{'s' if len(votes) != 1 else ''}")
