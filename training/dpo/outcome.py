"""What a training run reports and how it ends, without torch: the trainer's result, its cancel and divergence, its
callbacks and stage names. The pages and the web processes read these (training.services, training.launcher); the
trainer itself (training.dpo.trainer) imports torch, which a web process never needs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TrainResult:
    pairs: int
    steps: int
    mean_loss: float
    seconds: float
    pairs_per_s: float
    peak_rss_mb: float
    final_metrics: dict = field(default_factory=dict)
    reference_logps: list[tuple[float, float]] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    # per pair, in input order: cut to max_length (its reference log-probs then hold for this pair only, not for
    # its answers in other pairs: training.dataset.store_reference_logps)
    truncated_pairs: list[bool] = field(default_factory=list)


class TrainingCancelled(Exception):
    """should_stop() returned True; nothing was saved."""


class TrainingDiverged(Exception):
    """A step's loss or gradient was not a finite number; the weights were not updated with it and nothing was saved."""


StepCallback = Callable[[int, int, dict], None]
# (stage, units done, units in the stage, optimiser steps still to come after it): the work before the first DPO step
StageCallback = Callable[[str, int, int, int], None]
REFERENCE_STAGE = "computing reference log-probs"
SFT_STAGE = "SFT warm start"
