"""Data and watchers the job tests share: decided pairs to train on, and the job's row as each progress report
leaves it."""
from __future__ import annotations


def labelled_pairs(version, annotator, count: int) -> None:
    """Decided pairs for training: response A always chosen."""
    from annotate.models import Label, LabellingRound, Pair
    from generation.models import Prompt, Response

    round_ = LabellingRound.objects.create(number=1)
    for i in range(count):
        prompt = Prompt.objects.create(text=f"Question {i}: what is {i} plus {i}?")
        a = Response.objects.create(prompt=prompt, version=version, sample_index=0, text=f"It is {2 * i}. Thank you!")
        b = Response.objects.create(prompt=prompt, version=version, sample_index=1, text="The quick brown fox.")
        pair = Pair.objects.create(prompt=prompt, response_a=a, response_b=b, round=round_, labels_done=1)
        Label.objects.create(pair=pair, annotator=annotator, choice="a", side="left", left_is_a=True)


def rows_at_reports(monkeypatch, model) -> list[tuple[float, str]]:
    """(progress, stage) of the job's `model` row as its claim left it (first), then after each report of its
    tracker, every report written (no throttling)."""
    from jobs import lifecycle

    rows, real = [], lifecycle.Tracker.report
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)

    def spy(self, *args, **kwargs):
        if not rows:
            rows.append(model.objects.values_list("progress", "stage").get(pk=self.job.pk))
        out = real(self, *args, **kwargs)
        rows.append(model.objects.values_list("progress", "stage").get(pk=self.job.pk))
        return out

    monkeypatch.setattr(lifecycle.Tracker, "report", spy)
    return rows


def went_back(rows: list[tuple[float, str]]) -> list:
    """The reports after which the bar stood lower than before."""
    return [(rows[k - 1], rows[k]) for k in range(1, len(rows)) if rows[k][0] < rows[k - 1][0] - 1e-9]
