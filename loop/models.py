"""Headless loop runs: several rounds of generate → judge-label → train → evaluate, started from the admin."""
from django.db import models

from jobs.models import Job


class LoopRun(Job):
    """R rounds of P pairs labelled by one judge; each round's figures are appended to `results` as it ends.
    done/total count rounds; `stage` says which step of which round is running."""

    unit = "rounds"
    task_name = "loop.tasks.run_loop_task"
    rounds = models.PositiveIntegerField(default=1)
    pairs = models.PositiveIntegerField(default=48, help_text="Pairs generated and labelled per round.")
    judge = models.CharField(max_length=300, help_text='The judge, as "package.module:attr".')
    tag = models.CharField(max_length=100, blank=True, help_text="Only prompts with this tag (empty: all).")
    eval_limit = models.PositiveIntegerField(default=64, help_text="Eval prompts each new version answers.")
    seed = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="Training, sampling and pairing settings.")
    results = models.JSONField(default=list, blank=True, help_text="One object per finished round.")

    def __str__(self) -> str:
        return f"loop run {self.pk} ({self.status})"

    @property
    def rounds_done(self) -> int:
        return len(self.results or [])

    @property
    def evaluated_on(self) -> str:
        """How many eval prompts its rounds were evaluated on, as their judge's votes against base count them: the
        eval limit is at most that (the eval split, or its tag, may have fewer prompts; one too long is left out)."""
        votes = [r.get("votes") for r in self.results or [] if isinstance(r, dict)]
        counts = sorted({v["n"] for v in votes if isinstance(v, dict) and isinstance(v.get("n"), int)})
        if not counts:
            return f"up to {self.eval_limit} eval prompts"
        shown = f"{' or '.join(map(str, counts))} eval prompt{'s' if counts != [1] else ''}"
        return shown if counts == [self.eval_limit] else f"{shown} (limit {self.eval_limit})"
