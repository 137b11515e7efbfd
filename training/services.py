"""What the training app does: start a round, run it (DPO on the decided pairs), register the new version.

The DPO math and loop live in `training.dpo` (no Django); this module connects them to the database: which pairs,
which reference, cached reference log-probs, progress, the atomic checkpoint and the new ModelVersion.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings
from django.db import IntegrityError, transaction

from annotate.closing import close_if_enough
from annotate.models import LabellingRound
from annotate.quality import label_noise
from generation.backends.base import GenerationCancelled
from generation.models import ModelVersion
from generation.services import base_version, current_version, register_version, release_backends, update_mean_length
from jobs import lifecycle
from jobs.lifecycle import JobCancelled, Tracker
from jobs.models import ACTIVE
from prefcore.errors import SettingError
from prefcore.hardware import describe_dtype
from prefloop.numerics import product_dtype

from .dataset import RoundData, labelling_round, round_data, spin_data, store_reference_logps
from .dpo.config import SMOOTHED_LOSSES, DPOConfig, agreement_for_smoothing
from .dpo.data import PreferencePair
from .dpo.outcome import SFT_STAGE, TrainingCancelled
from .evaluation import eval_answer_prompts, evaluate_round
from .launcher import train_in_processes
from .models import TrainingRun, TrainingStep
from .tensorboard import EventWriter

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """Something a person can fix: no labels yet, a round already running, a bad setting (`setting`: its name, when
    one setting is to blame)."""

    setting: str | None = None


class AlreadyRunning(TrainingError):
    """A training round on the same input version is queued or running (one at a time per version): a conflict with
    that run, not a bad setting."""


def start_training_run(
    *, input_version: ModelVersion | None = None, reference_choice: str = TrainingRun.REF_BASE,
    data_choice: str = TrainingRun.DATA_ALL, params: dict | None = None, user=None, enqueue: bool = True,
    part_of: str = "", measured: str = "",
) -> TrainingRun:
    """Validate the settings, record the run as queued and hand it to the worker (`part_of`: the key of the job
    that runs it inside itself, which then passes enqueue=False). `label_agreement: "measured"` is measured here;
    a caller that already measured it (the Train page's form) passes the number and `measured`, the log line
    measured_label_agreement gave it."""
    lifecycle.end_orphans()  # a killed command's run does not hold its version ("already queued or running")
    input_version = input_version or current_version()
    if data_choice == TrainingRun.DATA_SPIN:
        if reference_choice == TrainingRun.REF_BASE and input_version != base_version(input_version):
            raise TrainingError("SPIN trains against the version it starts from, which sampled the answers it "
                                "rejects: choose the reference 'start' (the round's starting model)")
        if measured or (isinstance(params, dict) and params.get("label_agreement") == MEASURED):
            raise TrainingError("SPIN reads no label, so people's measured label agreement does not apply to it: "
                                "leave label_agreement out (or give a number)")
    params, line = measured_label_agreement(params)
    measured = line or measured
    try:
        config = DPOConfig.from_dict({} if params is None else params)  # [] or 0 is an error, not "defaults"
    except ValueError as exc:
        error = TrainingError(f"training settings: {exc}")
        error.setting = exc.name if isinstance(exc, SettingError) else None
        raise error from None
    check_loss_terms(config)
    if reference_choice not in (TrainingRun.REF_BASE, TrainingRun.REF_START):
        raise TrainingError(f"reference must be 'base' or 'start' (got {reference_choice!r})")
    if data_choice not in DATA_CHOICES:
        raise TrainingError(f"data must be one of {', '.join(map(repr, DATA_CHOICES))} (got {data_choice!r})")
    reference = base_version(input_version) if reference_choice == TrainingRun.REF_BASE else input_version
    for role, version in (("input", input_version), ("reference", reference)):
        # refused here, not in the worker after the round's data is built (_full_path says the same there)
        if version.kind == ModelVersion.LORA:
            raise TrainingError(f"the {role} version {version.name!r} is a LoRA adapter: train from a full "
                                "checkpoint (the adapter's base, or a round trained without lora)")
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                input_version=input_version, reference_version=reference, reference_choice=reference_choice,
                data_choice=data_choice, params=config.to_dict(), created_by=user, part_of=part_of,
            )
    except IntegrityError:
        raise AlreadyRunning(f"a training round on version {input_version.name!r} is already queued or running") from None
    if measured:
        _log(run, measured)
    if enqueue:
        lifecycle.enqueue(run)
    return run


def check_loss_terms(config: DPOConfig) -> None:
    """Refuse, as a TrainingError, a loss term that is not allowed, does not load or cannot run with the loss: here,
    before anything is queued, not in the worker."""
    from .dpo.terms import terms_for  # (here: it imports torch, which a web process needs only to start a run)

    try:
        terms_for(config, settings.PREFLOOP_LOSS_TERMS)
    except ValueError as exc:
        raise TrainingError(f"training settings: loss_terms: {exc}") from None


MEASURED = "measured"
MIN_NOISE_EVIDENCE = 20  # comparisons on shared pairs plus gold labels: fewer read a flip rate good to ±0.2 at best
MAX_MEASURED_FLIPS = 0.45  # past it the labels say almost nothing (agreement under 0.505): check them, do not train


def measured_label_agreement(params: dict | None) -> tuple[dict | None, str]:
    """Params with `label_agreement: "measured"` replaced by the agreement people's labels show so far
    (`annotate.quality.label_noise`: pairs two people both decided, and gold pairs), as the number cDPO's label
    smoothing is set from, and a line for the run's log saying what it was measured on; other params unchanged.
    Too little evidence, labels near chance, or a label_smoothing given too is a TrainingError naming the setting."""
    if not isinstance(params, dict) or params.get("label_agreement") != MEASURED:
        return params, ""
    if params.get("label_smoothing"):
        raise TrainingError("training settings: label_agreement 'measured' sets the label smoothing itself: "
                            "give label_smoothing or measure the agreement, not both")
    noise = label_noise()
    flips = noise.flip_rate
    if noise.observations < MIN_NOISE_EVIDENCE or flips is None:
        raise TrainingError(
            f"training settings: label_agreement 'measured' needs at least {MIN_NOISE_EVIDENCE} comparisons to "
            f"measure it on (two people's labels on a shared pair, or a label on a gold pair); found "
            f"{noise.observations} ({noise.describe()}): give a number instead, or have people label more shared "
            "or gold pairs")
    if flips > MAX_MEASURED_FLIPS:
        raise TrainingError(f"training settings: label_agreement 'measured': people's labels are little better than "
                            f"chance ({noise.describe()}; about {flips:.0%} wrong): check the guidelines and the "
                            "gold answers before training on them")
    agreement = agreement_for_smoothing(flips)
    line = (f"label agreement measured: {agreement:.4g} ({noise.describe()}), so about {flips:.1%} of labels are "
            f"taken as wrong: the label smoothing is {flips:.4g}")
    return dict(params, label_agreement=agreement), line


DATA_CHOICES = tuple(value for value, _ in TrainingRun._meta.get_field("data_choice").choices)


def data_for(input_version: ModelVersion, data_choice: str, *, reference: ModelVersion, max_length: int,
             dtype: str | None = None, seed: int = 0) -> RoundData:
    """What a round from `input_version` trains on (and is measured on) for a data choice: every decided pair so
    far; only those of the starting version's labelling round (its round + 1: what it sampled, and what any other
    version of its round sampled or a push put there; the round is the unit, not who sampled); or those and as
    many earlier ones drawn at random (seeded by the
    run's seed and the round, so a run retried draws the same); or, for SPIN, no labels: reference answers over the
    starting version's own answers."""
    if data_choice == TrainingRun.DATA_SPIN:
        return spin_data(input_version=input_version, reference=reference, max_length=max_length, dtype=dtype,
                         heldout_fraction=settings.PREFLOOP_HELDOUT_FRACTION,
                         heldout_min_pairs=settings.PREFLOOP_HELDOUT_MIN_PAIRS)
    labelling = labelling_round(input_version)
    rounds = None if data_choice == TrainingRun.DATA_ALL else [labelling]
    replay_seed = f"{seed}:{labelling}" if data_choice == TrainingRun.DATA_REPLAY else None
    return round_data(reference=reference, max_length=max_length, dtype=dtype, rounds=rounds, replay_seed=replay_seed,
                      heldout_fraction=settings.PREFLOOP_HELDOUT_FRACTION,
                      heldout_min_pairs=settings.PREFLOOP_HELDOUT_MIN_PAIRS)


_MEASURE = object()  # training_preview: measure the rate itself


def training_preview(input_version: ModelVersion, data_choice: str = TrainingRun.DATA_ALL,
                     max_length: int | None = None, *, rate=_MEASURE) -> dict:
    """What a round would train on if started now, before it starts: pairs, their answers' tokens, held-out pairs,
    and whether the round is too small to hold any out (the same selection run_training makes). `rate` is
    `training_rate`'s answer when the caller has it already (a page previewing several choices measures once)."""
    max_length = max_length or DPOConfig().max_length
    data = data_for(input_version, data_choice, reference=base_version(input_version), max_length=max_length,
                    seed=DPOConfig().seed)
    uncounted = len({r.pk for row in data.rows for r in row if r.text and not r.token_count})
    estimate = None
    if data.pairs:
        estimate = estimated_duration(input_version, len(data.pairs),
                                      rate=training_rate(input_version) if rate is _MEASURE else rate)
    return {
        "data_choice": data_choice, "data_label": dict(TrainingRun._meta.get_field("data_choice").choices)[data_choice],
        "pairs": len(data.pairs),
        # imported answers and reference answers are tokenized only when a run trains: a sum without them would
        # claim fewer tokens than the round has, so it is not given then
        "answer_tokens": None if uncounted else sum(c.token_count + r.token_count for c, r in data.rows),
        "uncounted_answers": uncounted,
        "heldout": len(data.heldout), "holding_out": data.holding_out,
        "heldout_min_pairs": settings.PREFLOOP_HELDOUT_MIN_PAIRS, "estimate": estimate,
    }


ESTIMATE_FROM_RUNS = 5  # the latest finished runs an estimate is measured on


def training_rate(input_version: ModelVersion, *, dtype: str | None = None) -> dict | None:
    """How fast this installation's workers train versions of `input_version`'s base model: from the latest
    succeeded runs on the same base in the same dtype, the median of the trainer's time per pair and epoch (its whole
    call: loading the model, the reference log-probs, the steps, saving the version) and the median of the rest of
    each run's time (reading its pairs, registering and measuring the version; a lost attempt's time too, when one was
    started again). None when no such run has finished yet (the first one measures it)."""
    dtype = dtype or product_dtype()
    base = base_version(input_version)
    per_pair, around = [], []
    finished = (TrainingRun.objects.filter(status=TrainingRun.SUCCEEDED, started__isnull=False,
                                           finished__isnull=False)
                .select_related("input_version").order_by("-finished")[:50])
    bases: dict[int, int] = {}  # input version -> its base, each lineage walked once
    for run in finished:
        metrics, params = run.metrics or {}, run.params or {}
        seconds, done = metrics.get("seconds"), metrics.get("pairs")
        run_epochs = params.get("epochs", DPOConfig().epochs)
        if (params.get("dtype") != dtype or not isinstance(seconds, int | float) or not isinstance(done, int | float)
                or seconds <= 0 or done <= 0 or not isinstance(run_epochs, int) or run_epochs < 1):
            continue
        if run.input_version_id not in bases:
            bases[run.input_version_id] = base_version(run.input_version).pk
        if bases[run.input_version_id] != base.pk:
            continue
        per_pair.append(seconds / (done * run_epochs))
        around.append(max(0.0, (run.finished - run.started).total_seconds() - seconds))
        if len(per_pair) == ESTIMATE_FROM_RUNS:
            break
    if not per_pair:
        return None
    return {"seconds_per_pair": statistics.median(per_pair), "overhead_seconds": statistics.median(around),
            "runs": len(per_pair), "dtype": dtype}


def estimated_duration(input_version: ModelVersion, pairs: int, *, epochs: int | None = None,
                       dtype: str | None = None, rate=_MEASURE) -> dict | None:
    """How long a round of `pairs` pairs would take, from `training_rate` (measured here unless given). None when no
    run has finished to measure it. Returns seconds, the rate and the number of runs it was measured on, so a page
    can say what the figure rests on."""
    epochs = epochs or DPOConfig().epochs
    if rate is _MEASURE:
        rate = training_rate(input_version, dtype=dtype)
    if rate is None:
        return None
    return {**rate, "seconds": rate["overhead_seconds"] + rate["seconds_per_pair"] * pairs * epochs,
            "epochs": epochs}


def cancel_training_run(run: TrainingRun) -> None:
    """Stop the run: at once if queued, before its next optimiser step if training (no checkpoint is kept)."""
    lifecycle.cancel(run)


def _partial_checkpoints() -> dict[int, list[Path]]:
    """The unregistered checkpoint folders in MODELS_DIR (`.tmp-run-<run id>-*`), by the run each is named after."""
    ids: dict[int, list[Path]] = {}
    for folder in settings.MODELS_DIR.glob(".tmp-run-*-*"):
        number = folder.name.split("-")[2]
        if number.isdigit():
            ids.setdefault(int(number), []).append(folder)
    return ids


def _remove_unless_active(found: dict[int, list[Path]], *, also: int | None = None) -> None:
    """Removes the folders in `found` of the runs that are not active (and those of run `also`, whatever its
    status): a run still active, here or on a worker sharing the disk, keeps its own."""
    active = set(TrainingRun.objects.filter(pk__in=list(found), status__in=ACTIVE).values_list("pk", flat=True))
    for pk, folders in found.items():
        if pk == also or pk not in active:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)


def remove_checkpoints_of(job) -> None:
    """The unregistered checkpoint folders of `job` (a training run) or of the runs inside it (a loop's rounds), once
    they are no longer active: its process died while training (kill -9, the out-of-memory killer, a lost worker)
    and the job was ended for it (lifecycle.AFTER_PROCESS_GONE). The folders of other runs are theirs: one ended by
    the silence rule may still be at work."""
    runs = set(TrainingRun.objects.filter(part_of=job.key).values_list("pk", flat=True))
    if isinstance(job, TrainingRun):
        runs.add(job.pk)
    found = {pk: folders for pk, folders in _partial_checkpoints().items() if pk in runs}
    if found:
        _remove_unless_active(found)


def _remove_partial_checkpoints(run_id: int) -> None:
    """Folders an earlier, killed attempt of this run left behind, and those of runs that ended without another
    attempt (a lost loop's round, ended failed): each is named after its run, so a run still active elsewhere (a
    worker sharing the disk) keeps its own."""
    _remove_unless_active(_partial_checkpoints(), also=run_id)


def _claim(run_id: int) -> TrainingRun | None:
    """Mark the run running from step 0 (a run cannot resume part-way), or, when it registered its version before
    its worker was lost, running on from there (its steps kept: only the measuring is left); None when there is
    nothing to do."""
    _remove_partial_checkpoints(run_id)
    with transaction.atomic():
        registered = TrainingRun.objects.filter(pk=run_id, output_version__isnull=False).exists()
        # a registered run measures its version again from the start: its bar starts there, in the claim's write that
        # says why (left where the lost attempt was, the first report moved it back under the measuring's stage)
        run = lifecycle.claim(TrainingRun, run_id, restart=not registered,
                              resume_at=lambda run: (_training_share([]), run.done))
        if run is not None and not registered:
            # the lost attempt's figures go with its steps: a run started again showed them beside "0 steps recorded"
            TrainingStep.objects.filter(run=run).delete()
            TrainingRun.objects.filter(pk=run.pk).update(metrics={}, pairs=0)
            run.metrics, run.pairs = {}, 0
            # and its TensorBoard curves: the new attempt's were written beside them, two values at each step
            shutil.rmtree(tensorboard_dir(run), ignore_errors=True)
    return run


def run_training(run_id: int, *, progress: Callable[[int, int, dict], None] | None = None,
                 parents: Iterable[Tracker] = (), on_report: Callable[[float, str], None] | None = None) -> TrainingRun:
    """Run a queued round to the end; safe to call twice (a finished run is left alone). `parents`: trackers of
    the jobs this run is part of (a loop run), whose cancel stops it too. `progress(step, total, metrics)` after
    each DPO step; `on_report(fraction, stage)` at every report of the run's progress (Tracker.on_report), the
    stages around the steps too."""
    run = _claim(run_id)
    if run is None:
        return TrainingRun.objects.get(pk=run_id)
    tracker = Tracker(run, parents=parents)
    tracker.on_report = on_report
    out_tmp: Path | None = None
    version = None
    try:
        config = _run_config(run)
        if run.output_version_id is not None:  # registered before its worker was lost: measure it, train nothing
            version = run.output_version
            # Its answers and KL; not held-out pairs: the labels may have changed since it trained (one label more
            # can start holding out prompts it trained on), so the held-out figures would not be what they say.
            _log(run, f"version {version.name!r} was registered before the worker was lost: measuring it, "
                      "not training again (its answers and KL; held-out pairs are not measured again)")
            _measure_and_finish(run, version, config, SimpleNamespace(heldout=[], heldout_rows=[]), tracker,
                                _training_share([]))
            run.refresh_from_db()
            return run
        # every decided pair so far, for the `all` data: long in a large instance, said, and a Cancel meanwhile heard
        # before a model is loaded
        tracker.report(stage="reading the pairs it trains on", force=True)
        data = data_for(run.input_version, run.data_choice, reference=run.reference_version,
                        max_length=config.max_length, dtype=config.dtype, seed=config.seed)
        tracker.check()
        pairs, rows, as_sure, coin_flips = _labels_for_loss(data.pairs, data.rows, config)
        if coin_flips and not pairs:
            raise TrainingError(f"no pairs to train on with the {config.loss_type!r} loss: the {coin_flips} decided "
                                "are coin flips (label probability 0.5), which it cannot read; the "
                                f"{' and '.join(SMOOTHED_LOSSES)} losses train them as such")
        if as_sure or coin_flips:
            _log(run, f"the {config.loss_type!r} loss reads no label probability (only the "
                      f"{' and '.join(SMOOTHED_LOSSES)} losses do): {as_sure} soft or 'slight' labels train as sure "
                      f"ones, {coin_flips} coin-flip pairs (probability 0.5) are left out")
        if not pairs and run.data_choice == TrainingRun.DATA_SPIN:
            name = run.input_version.name
            raise TrainingError(
                f"no SPIN pairs to train on: all {len(data.heldout)} are on held-out prompts, which measure rounds; "
                f"generate answers with {name!r} on more prompts with a reference answer" if data.heldout else
                f"no SPIN pairs to train on: no train prompt has both a reference answer and an answer version "
                f"{name!r} sampled that differs from it; import prompts with a 'reference' (or 'completion') column, "
                f"then generate answers with {name!r}")
        if not pairs:
            new_only = run.data_choice != TrainingRun.DATA_ALL
            scope = f"of labelling round {labelling_round(run.input_version)} " if new_only else ""
            if data.same_answers:
                raise TrainingError(f"no decided pairs {scope}to train on: the {data.same_answers} decided have both "
                                    "answers the same text, which teaches nothing")
            raise TrainingError(f"no decided pairs {scope}to train on yet: label some pairs first")
        TrainingRun.objects.filter(pk=run.pk).update(pairs=len(pairs))
        _log(run, f"{len(pairs)} pairs; reference {run.reference_version.name!r}; "
                  f"{sum(p.ref_chosen_logp is not None for p in pairs)} with cached reference log-probs; "
                  f"{len(data.heldout)} held-out pairs to measure the round on"
                  + ("" if data.holding_out or not settings.PREFLOOP_HELDOUT_FRACTION else
                     f" (fewer than {settings.PREFLOOP_HELDOUT_MIN_PAIRS} pairs: nothing held out of this round)")
                  + (f"; {data.same_answers} decided pairs left out: both answers are the same text, which "
                     "teaches nothing" if data.same_answers else ""))
        settings.MODELS_DIR.mkdir(parents=True, exist_ok=True)
        out_tmp = Path(tempfile.mkdtemp(prefix=f".tmp-run-{run.pk}-", dir=settings.MODELS_DIR))
        release_backends()  # a sampler this worker kept (weights and a KV cache of up to 4 GiB): training needs the memory
        share = _training_share(data.heldout)  # read once: the bar's split must not move between training and measuring
        result = _train(run, tracker, config, pairs, out_tmp, progress, share)
        # asked to stop after the last step: no version either. Asked afresh: a Cancel in the last half second
        # (the checks between steps ask at most that often) registered the version and ended the run "succeeded"
        # after its page had said "cancelling"
        tracker.check(fresh=True)
        tracker.report(stage="registering the new version", force=True)  # every pair's reference log-probs stored too
        store_reference_logps(run.reference_version, config.max_length, config.dtype, rows, result.reference_logps,
                              result.truncated_pairs)
        version = _register(run, config, out_tmp)
        out_tmp = None
        run.refresh_from_db(fields=["metrics"])
        # a candidate from the moment it was registered (_register), whatever happens next (a cancel while measuring,
        # a lost worker): one that awaits the gate, which no rollback makes current without a reason
        TrainingRun.objects.filter(pk=run.pk).update(done=result.steps, metrics=dict(
            run.metrics, **result.final_metrics, mean_loss=result.mean_loss, pairs=result.pairs,
            pairs_per_s=result.pairs_per_s, peak_rss_mb=result.peak_rss_mb, seconds=result.seconds,
            truncated=result.truncated, dropped=result.dropped))
        _log(run, f"registered version {version.name!r} as a candidate: it becomes current when it passes the "
                  "promotion gate against the current version, or when staff promote it by hand")
        _measure_and_finish(run, version, config, data, tracker, share)
    except (TrainingCancelled, JobCancelled):
        # the unregistered checkpoint goes before the run says so ("no checkpoint kept"): removed after, a reader of
        # the ended run (the page, a test, a script freeing the disk) found its folder still there
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
        tracker.flush()  # the steps it took, a throttled report's too: the end says "cancelled after N of M steps"
        # stopped while its version was measured: the version is registered (a candidate, as the log says), with
        # the figures measured so far
        lifecycle.stopped(run, "no checkpoint kept" if version is None else
                          f"stopped while measuring {version.name!r}, which stays a candidate, its figures partial")
    except Exception as exc:
        log.exception("training run %s failed", run.pk)
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
        tracker.flush()  # as for a cancel: a run that diverged at step 3 showed 2 steps taken
        lifecycle.fail(run, str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}")
    except BaseException as exc:  # Ctrl-C at the command line: the caller records it; the unregistered checkpoint goes
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt) and version is not None:
            # the version is registered: say what is left of it, as a cancel from the page does (the caller's own
            # record of the Ctrl-C finds the run ended and keeps this)
            lifecycle.interrupted(run, f"Ctrl-C while measuring {version.name!r}, which stays a candidate, "
                                       "its figures partial")
        raise
    run.refresh_from_db()
    return run


def _labels_for_loss(pairs: list[PreferencePair], rows: list, config: DPOConfig) -> tuple[list, list, int, int]:
    """A round's pairs as the run's loss can read them: (pairs, their rows, how many soft labels train as sure, how
    many coin flips are left out). A soft or "slight" label (a probability below 1: a label's strength, a judge's
    measured agreement, an imported tie) is read by the sigmoid and robust losses only; the others train a
    preference as sure (told in the run's log), and a coin flip (0.5), which states none, is left out."""
    if config.loss_type in SMOOTHED_LOSSES:
        return pairs, rows, 0, 0
    kept, kept_rows, as_sure, coin_flips = [], [], 0, 0
    for pair, row in zip(pairs, rows, strict=True):
        prob = pair.preference_prob
        if prob is not None and prob <= 0.5:
            coin_flips += 1
            continue
        if prob is not None and prob < 1:
            as_sure += 1
        kept.append(dataclasses.replace(pair, preference_prob=None))
        kept_rows.append(row)
    return kept, kept_rows, as_sure, coin_flips


def _run_config(run: TrainingRun) -> DPOConfig:
    """The run's DPOConfig with its dtype fixed: "auto" becomes the product's (PREFLOOP_DTYPE on this worker), recorded
    in the run's params, so the page shows it, a retried attempt keeps it, and the processes of `accelerate launch`
    (which read the config file) compute in the same dtype as this worker would."""
    config = DPOConfig.from_dict(run.params)
    if config.dtype == "auto":
        config = DPOConfig.from_dict(dict(config.to_dict(), dtype=product_dtype()))
        run.params = dict(run.params, dtype=config.dtype)
        TrainingRun.objects.filter(pk=run.pk).update(params=run.params)
        _log(run, f"computing in {describe_dtype(settings.PREFLOOP_DTYPE)}")  # this worker's device, from torch
    else:
        _log(run, f"computing in {describe_dtype(config.dtype, setting='this run')}")
    return config


def _measure_and_finish(run: TrainingRun, version: ModelVersion, config: DPOConfig, data, tracker: Tracker,
                        share: float) -> None:
    """Measure the run's registered version, then end the run succeeded, its version a candidate. The run ends once
    its version is measured: "succeeded" means every figure of the round is there (a gate checked at once reads its
    KL), and the worker is free for the next job. `share`: the bar's part the training had (_training_share, read
    before it trained: read again, eval prompts added meanwhile would move the bar back)."""
    tracker.report(stage=f"measuring {version.name!r}", progress=share, force=True)
    failed = _evaluate(run, version, config, data, tracker.should_stop,
                       on_stage=lambda text, part: tracker.report(stage=f"measuring {version.name!r}: {text}",
                                                                  progress=share + (1 - share) * part))
    run.refresh_from_db(fields=["metrics", "done"])
    # a measurement that failed is said where the run's end is read (its page, the runs list, the API), not only in
    # a log the admin shows: the run "succeeded" with no word of the figures it lacks
    lifecycle.finish(run, output_version=version, done=run.done, metrics=run.metrics,
                     decision=TrainingRun.Decision.CANDIDATE,
                     stage=f"trained; measuring {version.name!r} failed: {failed}" if failed else "")


def _evaluate(run: TrainingRun, version: ModelVersion, config: DPOConfig, data,
              should_stop: Callable[[], bool] | None = None, on_stage: Callable[[str, float], None] | None = None) -> str:
    """Measure the new version (held-out pairs, its own answers); a failure here is logged and returned ("" when it
    measured), the version stays.
    `should_stop`: a cancel now (of the run, or of a loop run it is part of) stops the measurement within seconds
    and ends the run cancelled (TrainingCancelled), its version registered (a candidate) without these figures. It
    ended "succeeded", and a loop whose training run a person cancelled here went on to evaluate and promote."""
    _log(run, f"measuring {version.name!r}: {len(data.heldout)} held-out pairs, "
              f"answers to up to {settings.PREFLOOP_ROUND_EVAL_PROMPTS} eval prompts")
    try:
        found = evaluate_round(version, run.reference_version, config, data.heldout, data.heldout_rows,
                               should_stop=should_stop, on_stage=on_stage)
    except (GenerationCancelled, JobCancelled):  # the latter from a parent's check as the stage is passed up
        _log(run, f"measuring {version.name!r} stopped on request: the version stays, without these figures")
        raise TrainingCancelled("measuring stopped on request") from None
    except Exception as exc:  # the round itself succeeded: keep it, say what the measurement hit
        log.exception("measuring training run %s failed", run.pk)
        _log(run, f"measuring the round failed: {type(exc).__name__}: {exc}")
        return f"{type(exc).__name__}: {exc}"
    run.refresh_from_db(fields=["metrics"])
    run.metrics = dict(run.metrics, **found)
    TrainingRun.objects.filter(pk=run.pk).update(metrics=run.metrics)
    board = tensorboard_writer(run)
    if board is not None:  # the round's own figures, at its last step beside the curves
        run.refresh_from_db(fields=["total"])  # total_steps is its read-only alias
        board.scalars(run.total, found)
        board.close()
    if "sampled/answers" in found:
        update_mean_length(version)
    _log(run, "measured: " + ", ".join(f"{k} {v:.4g}" for k, v in found.items()))
    _close_labelling_if_enough(run, found)
    return ""


def _close_labelling_if_enough(run: TrainingRun, metrics: dict) -> None:
    """The labelling round whose pairs the run's input version sampled closes when the held-out measurement says
    more labels would not change much (its close_width; annotate.closing). A SPIN round read no label, so its
    held-out figures say nothing of the labelling round's labels."""
    if run.data_choice == TrainingRun.DATA_SPIN:
        return
    round_ = LabellingRound.objects.filter(number=labelling_round(run.input_version)).first()
    reason = close_if_enough(round_, metrics) if round_ is not None else None
    if reason:
        _log(run, f"labelling round {round_.number} closed: {reason}")


# The bar's share of the training itself (the warm start's and DPO's steps) when the version it registers is measured
# after it (answers to the eval prompts, held-out pairs, KL): the measuring has the rest. It sat at 99% under its stage
# for a minute or more.
TRAINING_SHARE = 0.9


def _training_share(heldout: list) -> float:
    """TRAINING_SHARE, or all of the bar when there is nothing to measure (no held-out pair, no eval prompt)."""
    return TRAINING_SHARE if heldout or eval_answer_prompts(settings.PREFLOOP_ROUND_EVAL_PROMPTS) else 1.0


def _train(run: TrainingRun, tracker: Tracker, config: DPOConfig, pairs: list[PreferencePair], out_dir: Path,
           progress=None, share: float = 1.0):
    board = tensorboard_writer(run)
    warm = {"steps": 0}  # the SFT warm start's steps: on the bar before the DPO steps, one to one

    def on_stage(stage: str, done: int, total: int, then: int) -> None:
        if stage == SFT_STAGE:
            warm["steps"] = total
            tracker.report(stage=f"{stage}: step {done} of {total}",
                           progress=share * done / max(total + then, 1))
        else:  # the reference log-probs: a forward pass, before any step, so the bar waits on them at 0
            tracker.report(stage=f"{stage}: batch {done} of {total}")

    def on_step(step: int, total: int, metrics: dict) -> None:
        TrainingStep.objects.update_or_create(run=run, step=step, defaults={"data": metrics})
        if board is not None:
            board.scalars(step, metrics)
        # after the last step the checkpoint is written (a model's weights: seconds to minutes), still "training"
        tracker.report(done=step, total=total,
                       progress=share * (warm["steps"] + step) / max(warm["steps"] + total, 1),
                       metrics=metrics, stage="training" if step < total else "saving the trained checkpoint",
                       force=step == total)
        if progress:
            progress(step, total, metrics)

    should_stop = tracker.should_stop
    tracker.report(stage="loading the model", force=True)

    try:
        if settings.PREFLOOP_TRAIN_PROCESSES > 1:  # DDP through `accelerate launch` (docs/deployment.md)
            workdir = out_dir.with_name(out_dir.name + "-launch")
            _log(run, f"training in {settings.PREFLOOP_TRAIN_PROCESSES} processes through accelerate launch")
            try:
                return train_in_processes(config, _full_path(run.input_version), pairs, out_dir,
                                          processes=settings.PREFLOOP_TRAIN_PROCESSES,
                                          reference_dir=_full_path(run.reference_version), on_step=on_step,
                                          should_stop=should_stop, workdir=workdir,
                                          allowed_terms=settings.PREFLOOP_LOSS_TERMS, on_stage=on_stage)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        from .dpo.trainer import train_dpo  # (here: it imports torch, which the pages never need)

        return train_dpo(config, _full_path(run.input_version), pairs, out_dir,
                         reference_dir=_full_path(run.reference_version), on_step=on_step, should_stop=should_stop,
                         allowed_terms=settings.PREFLOOP_LOSS_TERMS, on_stage=on_stage)
    finally:
        if board is not None:
            board.close()


def tensorboard_dir(run: TrainingRun) -> Path:
    """Where a run's TensorBoard event files go (whether or not PREFLOOP_TENSORBOARD wrote any)."""
    return settings.TENSORBOARD_DIR / f"run-{run.pk}"


def tensorboard_writer(run: TrainingRun) -> EventWriter | None:
    """A new event file for this attempt of the run, when PREFLOOP_TENSORBOARD is on."""
    if not settings.PREFLOOP_TENSORBOARD:
        return None
    return EventWriter(tensorboard_dir(run))


ROUNDS_BOARD = "rounds"  # the folder beside the runs' whose series has one point per round (step: the version's round)


def record_round_figures(run: TrainingRun, figures: dict[str, float]) -> None:
    """A round's verdicts (win rates against base and against the current version, the gate's decision) in
    TensorBoard, when PREFLOOP_TENSORBOARD is on: in the run's folder at its last step, beside its curves, and in
    the `rounds` folder at the version's round number, so `tensorboard --logdir` the parent shows win rate per
    round. A round whose candidate was kept is trained again at the same round number, and a gate checked again
    adds its verdict again: such a round has several points at its step."""
    if not settings.PREFLOOP_TENSORBOARD or run.output_version is None:
        return
    run.refresh_from_db(fields=["total"])
    try:
        for folder, step in ((tensorboard_dir(run), run.total),
                             (settings.TENSORBOARD_DIR / ROUNDS_BOARD, run.output_version.round)):
            board = EventWriter(folder)
            board.scalars(step, figures)
            board.close()
    except OSError as exc:  # the verdicts are stored on the run; a full or read-only disk must not undo them
        log.warning("training run %s: TensorBoard figures not written: %s", run.pk, exc)


def _full_path(version: ModelVersion) -> str:
    if version.kind == ModelVersion.LORA:
        raise TrainingError(f"version {version.name!r} is a LoRA adapter: train from a full checkpoint")
    return version.path


def _register(run: TrainingRun, config: DPOConfig, out_tmp: Path) -> ModelVersion:
    """Rename the finished checkpoint into a folder of its own, then record the version: no version without a whole
    checkpoint, and no checkpoint folder ever reused or replaced.

    The folder takes the version's name ("round-N", then "round-N-2", ...). Renaming a folder onto a name that holds
    anything fails, so of two runs finishing together each gets its own folder; and a name already registered in the
    database (by another run a moment earlier, or by hand) moves the checkpoint on to the next name.
    """
    parent = run.input_version
    kind = ModelVersion.LORA if config.lora else ModelVersion.FULL
    base = parent if config.lora else None
    folder = out_tmp
    try:
        for name in _candidate_names(parent.round + 1):
            if ModelVersion.objects.filter(name=name).exists():
                continue
            target = settings.MODELS_DIR / name
            try:
                os.rename(folder, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    continue  # something is there already: never touched, try the next name
                raise
            folder = target
            try:
                # the version and its run's claim on it in one transaction: a version registered alone (the worker
                # lost, a write failing before the run named it) belonged to no run, so no gate held it and the
                # Train page offered to make it current with one click
                version = register_version(
                    name, folder, parent=parent, kind=kind, base=base, make_current=False,
                    claim=lambda v: TrainingRun.objects.filter(pk=run.pk).update(
                        output_version=v, decision=TrainingRun.Decision.CANDIDATE))
            except IntegrityError:
                continue  # registered meanwhile by another run: our folder moves on to the next free name
            break
        else:
            raise TrainingError(f"no free version name for round {parent.round + 1} in {settings.MODELS_DIR}")
    except BaseException:
        if folder != out_tmp:  # our own checkpoint, renamed but not registered: run_training removes only out_tmp
            shutil.rmtree(folder, ignore_errors=True)
        raise
    update_mean_length(version)
    return version


def _candidate_names(round_number: int, limit: int = 1000):
    yield f"round-{round_number}"
    for n in range(2, limit + 1):
        yield f"round-{round_number}-{n}"


_log = lifecycle.append_log
