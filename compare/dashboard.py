"""The rounds dashboard: per version its rating and answer length, per training run its stored metrics and curves,
with warnings for the two known failure signs (answers growing longer, a loss stuck at ln 2)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db.models import Avg

from generation.models import ModelVersion, Response
from training.models import TrainingRun

LN2 = math.log(2)
FLAT_TOLERANCE = 0.003  # |loss - ln 2| below this over the latter half of the steps: the policy is not moving
FLAT_MIN_STEPS = 4
LENGTH_GROWTH_WARNING = 0.2  # answers 20% longer than the parent's

# What each curve is called in TrainingStep.data / TrainingRun.metrics, first match wins (TRL's names included).
CURVES: list[tuple[str, tuple[str, ...]]] = [
    ("Reward margin", ("rewards/margins", "rewards/margin", "margin", "reward_margin", "margins")),
    ("Reward accuracy", ("rewards/accuracies", "rewards/accuracy", "accuracy", "reward_accuracy", "accuracies")),
    ("Loss", ("loss", "train/loss", "train_loss")),
    ("KL to reference", ("kl", "objective/kl", "kl_to_reference", "mean_kl", "kl_ref")),
]
# Measured once per round after training (training.evaluation), shown beside the curves' last values.
ROUND_METRICS: list[tuple[str, tuple[str, ...]]] = [
    ("Held-out accuracy", ("heldout/reward_accuracy",)),
    ("Held-out margin", ("heldout/margin",)),
    ("Answer tokens", ("sampled/mean_tokens",)),
]
CHOSEN_KEYS = ("rewards/chosen", "chosen_reward", "reward_chosen", "chosen_rewards")
REJECTED_KEYS = ("rewards/rejected", "rejected_reward", "reward_rejected", "rejected_rewards")
SKIP_KEYS = {"step", "epoch_step"}


@dataclass
class VersionRow:
    version: ModelVersion
    rating: float | None = None
    low: float | None = None
    high: float | None = None
    lc_rating: float | None = None
    mean_tokens: float | None = None
    length_growth: float | None = None  # relative to the parent's mean length
    run: TrainingRun | None = None
    headline: list[tuple[str, float]] = field(default_factory=list)  # margin, accuracy, loss, KL from run.metrics
    warnings: list[str] = field(default_factory=list)


def numeric_items(data: dict) -> dict[str, float]:
    """The finite numbers of a metrics dict (JSON may hold strings, lists, nested dicts: skipped)."""
    out = {}
    for key, value in (data or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value) and key not in SKIP_KEYS:
            out[key] = float(value)
    return out


def find_key(keys, candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        if name in keys:
            return name
    return None


def headline(metrics: dict) -> list[tuple[str, float]]:
    """Margin, accuracy, loss and KL from a run's summary, in that order (margin first: see FIELD-NOTES), then the
    round's held-out accuracy and margin and its answers' mean length where they were measured."""
    numbers = numeric_items(metrics)
    rows = []
    for title, candidates in CURVES + ROUND_METRICS:
        key = find_key(numbers, candidates)
        if key is not None:
            rows.append((title, numbers[key]))
    return rows


def mean_tokens(version: ModelVersion) -> float | None:
    """The version's stored mean answer length, else the mean over its stored responses."""
    if version.mean_response_tokens is not None:
        return version.mean_response_tokens
    return Response.objects.filter(version=version).aggregate(m=Avg("token_count"))["m"]


def loss_is_flat(losses: list[float]) -> bool:
    """True when the loss has stayed at ln 2 (the value at the start, when policy == reference)."""
    if len(losses) < FLAT_MIN_STEPS:
        return False
    latter = losses[len(losses) // 2:]
    return all(abs(v - LN2) < FLAT_TOLERANCE for v in latter)


def length_warning(growth: float | None) -> str | None:
    if growth is None or growth <= LENGTH_GROWTH_WARNING:
        return None
    return (f"answers are {growth:.0%} longer than the parent's: DPO tends to drift longer round after round; "
            "check the length-controlled rating")


FLAT_WARNING = ("the loss stayed at ln 2 = 0.693: the policy is not moving away from the reference "
                "(check the learning rate, the reference log-probs and the chat template)")


def step_series(run: TrainingRun) -> dict[str, list[tuple[float, float]]]:
    """Every numeric metric of the run's steps as (step, value) points."""
    series: dict[str, list[tuple[float, float]]] = {}
    for step, data in run.steps.values_list("step", "data"):
        for key, value in numeric_items(data).items():
            series.setdefault(key, []).append((float(step), value))
    return series


def run_warnings(run: TrainingRun, series: dict[str, list[tuple[float, float]]] | None = None) -> list[str]:
    series = step_series(run) if series is None else series
    key = find_key(series, CURVES[2][1])
    if key and loss_is_flat([v for _, v in series[key]]):
        return [FLAT_WARNING]
    return []


def version_rows(ratings_by_name: dict | None = None) -> list[VersionRow]:
    """One row per version, oldest round first, with its rating (leaderboard rows by name) and the run that made it."""
    ratings_by_name = ratings_by_name or {}
    versions = list(ModelVersion.objects.select_related("parent").order_by("round", "created"))
    runs = {r.output_version_id: r for r in TrainingRun.objects.filter(output_version__isnull=False)}
    lengths = {v.pk: mean_tokens(v) for v in versions}
    rows = []
    for v in versions:
        row = VersionRow(version=v, mean_tokens=lengths[v.pk], run=runs.get(v.pk))
        if v.name in ratings_by_name:
            r = ratings_by_name[v.name]
            row.rating, row.low, row.high, row.lc_rating = r.rating, r.low, r.high, r.lc_rating
        parent_len = lengths.get(v.parent_id) if v.parent_id else None
        if parent_len and row.mean_tokens is not None:
            row.length_growth = row.mean_tokens / parent_len - 1
        if warning := length_warning(row.length_growth):
            row.warnings.append(warning)
        if row.run is not None:
            last = row.run.steps.order_by("-step").values_list("data", flat=True).first()
            row.headline = headline(row.run.metrics) or headline(last or {})
            row.warnings += run_warnings(row.run)
        rows.append(row)
    return rows
