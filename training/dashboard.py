"""The rounds dashboard: per version its rating and answer length, per training run its stored metrics and curves,
with warnings for the two known failure signs (answers growing longer, a loss stuck at ln 2)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from generation.length import LengthGrowth, VersionLength, length_growth, version_length, version_lengths
from generation.models import ModelVersion
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
    # log(pi/pi_ref) of the batch's chosen and rejected answers, averaged: how far the policy moved on the pairs it
    # trains on (it goes negative as DPO pushes both down). Not a KL: the headline's KL is measured on answers the
    # version samples. "kl" is this figure's name in runs recorded before it was renamed.
    ("Log-ratio to reference", ("logratio/mean", "kl")),
]
# Every figure a dashboard headlines, defined here once: (title, keys in the run's metrics, what it is measured on).
# Measured on: "heldout" = held-out labelled pairs (never trained on), "answers" = the new version's answers to eval
# prompts, "batch" = the last training batch (the trainer's step metrics). Held-out and answer figures come first:
# a training batch's accuracy of 1 says little.
HEADLINE: list[tuple[str, tuple[str, ...], str]] = [
    ("Held-out accuracy", ("heldout/reward_accuracy",), "heldout"),
    ("Held-out margin", ("heldout/margin",), "heldout"),
    ("KL to reference", ("kl_to_reference",), "answers"),
    ("KL to base", ("kl_to_base",), "answers"),
    ("Answer tokens", ("sampled/mean_tokens",), "answers"),
    ("Reward margin", CURVES[0][1], "batch"),
    ("Reward accuracy", CURVES[1][1], "batch"),
    ("Loss", CURVES[2][1], "batch"),
]
UNITS = {"KL to reference": "nats per answer, the next-token KL over the vocabulary summed over its positions",
         "KL to base": "nats per answer, as the KL to reference, against the lineage's first version",
         "Answer tokens": "mean"}
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
    length: VersionLength | None = None
    length_growth: float | None = None  # relative to the parent's, on prompts both answered alike (growth.label)
    growth: LengthGrowth | None = None
    run: TrainingRun | None = None
    headline: list[Figure] = field(default_factory=list)  # HEADLINE's figures from run.metrics
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


@dataclass(frozen=True)
class Figure:
    """One headline number with what it is measured on and how many items: "Held-out accuracy 0.75 (12 held-out
    pairs)"."""

    title: str
    value: float
    measured_on: str


def headline(metrics: dict, batch_size: int | None = None) -> list[Figure]:
    """The run's headline figures (HEADLINE's order), each labelled with what it was measured on."""
    numbers = numeric_items(metrics)
    rows = []
    for title, candidates, source in HEADLINE:
        key = find_key(numbers, candidates)
        if key is not None:
            rows.append(Figure(title, numbers[key], measured_on(source, numbers, title, batch_size)))
    return rows


def measured_on(source: str, numbers: dict[str, float], title: str = "", batch_size: int | None = None) -> str:
    unit = UNITS.get(title)
    if source == "heldout":
        where = f"{_count(numbers.get('heldout/pairs'))} held-out pairs"
    elif source == "answers":
        where = f"{_count(numbers.get('sampled/answers'))} eval answers"
        if "sampled/truncated" in numbers and title == "Answer tokens":
            where += f", {_count(numbers['sampled/truncated'])} cut off"
    else:
        pairs = numbers.get("step_pairs")
        where = (f"last optimiser step, {pairs:.0f} pairs" if pairs is not None else  # older runs: the batch setting
                 "last training batch" + (f" of up to {batch_size} pairs" if batch_size else ""))
    return f"{unit}; {where}" if unit else where


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def mean_tokens(version: ModelVersion) -> float | None:
    """The version's mean answer length, as every page shows it (generation.length)."""
    return version_length(version).mean


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
    # the preference loss alone where the run logged it: the total holds RPO's NLL term (the loop's default), which
    # kept it far from ln 2 whatever the preference part did
    key = find_key(series, ("loss/preference", *CURVES[2][1]))
    if key and loss_is_flat([v for _, v in series[key]]):
        return [FLAT_WARNING]
    return []


def version_rows(ratings_by_name: dict | None = None, *, with_runs: bool = True) -> list[VersionRow]:
    """One row per version, oldest round first, with its rating (leaderboard rows by name) and, with_runs, the run
    that made it (its headline figures and warnings)."""
    ratings_by_name = ratings_by_name or {}
    versions = list(ModelVersion.objects.select_related("parent").order_by("round", "created"))
    runs = {r.output_version_id: r for r in TrainingRun.objects.filter(output_version__isnull=False)} if with_runs else {}
    measured = version_lengths([v.pk for v in versions])
    growth = length_growth((v.pk, v.parent_id) for v in versions if v.parent_id)
    lengths = {pk: m.mean for pk, m in measured.items()}
    rows = []
    for v in versions:
        row = VersionRow(version=v, mean_tokens=lengths[v.pk], length=measured[v.pk], run=runs.get(v.pk))
        if v.name in ratings_by_name:
            r = ratings_by_name[v.name]
            row.rating, row.low, row.high, row.lc_rating = r.rating, r.low, r.high, r.lc_rating
        if v.parent_id:
            row.growth = growth[(v.pk, v.parent_id)]
            row.length_growth = row.growth.growth
        if warning := length_warning(row.length_growth):
            row.warnings.append(warning)
        if row.run is not None:
            last = row.run.steps.order_by("-step").values_list("data", flat=True).first()
            batch = (row.run.params or {}).get("batch_size")
            row.headline = headline(row.run.metrics, batch) or headline(last or {}, batch)
            row.warnings += run_warnings(row.run)
        rows.append(row)
    return rows
