"""A loop run's progress: on its row (what the page and the API show) and on run_loop's bar."""


from jobs import lifecycle
from loop.models import LoopRun
from loop.services import run_loop, start_loop_run

from .test_run_loop import JUDGE, PARAMS, _open_gate


def _loop_progress(monkeypatch) -> list[float]:
    """Every progress a loop run's tracker is given (written or throttled)."""
    seen, real = [], lifecycle.Tracker.report

    def spy(self, *args, **kwargs):
        if isinstance(self.job, LoopRun) and kwargs.get("progress") is not None:
            seen.append(kwargs["progress"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", spy)
    return seen


def test_a_round_that_starts_from_a_promoted_version_never_moves_the_progress_back(loop_base, monkeypatch, settings):
    """Round 2 evaluates against base, then against round-1 for its gate: both reported into the whole evaluate
    stage, so the second started it again (0.9889, 1.0, 0.9778, ...) and the bar read 100% before the gate's
    evaluation. And a job inside the round that named a new stage passed its last progress written, seconds old, so
    the bar went back at the judge's ranking of each chunk's samples."""
    _, make = loop_base
    make(train=12, eval=3)
    _open_gate(settings)
    seen = _loop_progress(monkeypatch)
    run = start_loop_run(rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, seed=1, params=PARAMS,
                         enqueue=False, preset="all")
    run = run_loop(run.pk)
    assert run.status == "succeeded" and run.results[1]["gate"]["against"] == "round-1"
    back = [(k, f"{seen[k - 1]:.4f}", f"{seen[k]:.4f}") for k in range(1, len(seen)) if seen[k] < seen[k - 1] - 1e-9]
    assert not back, back
    assert seen[-1] == 1.0 and seen.count(1.0) <= 2  # 100% only once the run is done
