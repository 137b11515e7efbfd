"""What the training app does: start a round, run it (DPO on the decided pairs), register the new version.

The DPO math and loop live in `training.dpo` (no Django); this module connects them to the database: which pairs,
which reference, cached reference log-probs, progress, the atomic checkpoint and the new ModelVersion.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.closing import close_if_enough
from annotate.models import Round
from generation.models import ModelVersion
from generation.services import base_version, current_version, register_version, update_mean_length
from prefcore.hardware import describe_dtype
from prefloop.numerics import dtype_note, product_dtype

from .dataset import labelling_round, round_data, store_reference_logps
from .dpo.config import DPOConfig
from .dpo.data import PreferencePair
from .dpo.terms import configured_terms
from .models import TrainingRun, TrainingStep

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # a run whose worker died is started once more, then marked failed


class TrainingError(Exception):
    """Something a person can fix: no labels yet, a round already running, a bad setting."""


def start_training_run(
    *, input_version: ModelVersion | None = None, reference_choice: str = TrainingRun.REF_BASE,
    data_choice: str = TrainingRun.DATA_ALL, params: dict | None = None, user=None, enqueue: bool = True,
) -> TrainingRun:
    """Validate the settings, record the run as queued and hand it to the worker."""
    input_version = input_version or current_version()
    try:
        config = DPOConfig.from_dict({} if params is None else params)  # [] or 0 is an error, not "defaults"
    except ValueError as exc:
        raise TrainingError(f"training settings: {exc}") from None
    try:  # a term that is not allowed or does not load is refused here, not in the worker
        configured_terms(config.length_alpha, config.rule_penalty, config.loss_terms, settings.PREFLOOP_LOSS_TERMS)
    except ValueError as exc:
        raise TrainingError(f"training settings: loss_terms: {exc}") from None
    if reference_choice not in (TrainingRun.REF_BASE, TrainingRun.REF_START):
        raise TrainingError(f"reference must be 'base' or 'start' (got {reference_choice!r})")
    if data_choice not in (TrainingRun.DATA_ALL, TrainingRun.DATA_NEW):
        raise TrainingError(f"data must be 'all' or 'new' (got {data_choice!r})")
    reference = base_version(input_version) if reference_choice == TrainingRun.REF_BASE else input_version
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                input_version=input_version, reference_version=reference, reference_choice=reference_choice,
                data_choice=data_choice, params=config.to_dict(), created_by=user,
            )
    except IntegrityError:
        raise TrainingError(f"a training round on version {input_version.name!r} is already queued or running") from None
    if enqueue:
        from .tasks import run_training

        transaction.on_commit(lambda: run_training.delay(run.pk))
    return run


def cancel_training_run(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk, status__in=[TrainingRun.QUEUED, TrainingRun.RUNNING]).update(
        status=TrainingRun.CANCELLED, finished=timezone.now()
    )


def _remove_partial_checkpoints(run_id: int) -> None:
    """Folders an earlier, killed attempt of this run left behind (named after the run, so safe on shared disks)."""
    for folder in settings.MODELS_DIR.glob(f".tmp-run-{run_id}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _claim(run_id: int) -> TrainingRun | None:
    """Mark the run running; None when there is nothing to do (finished, cancelled, or out of attempts)."""
    _remove_partial_checkpoints(run_id)
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status not in (TrainingRun.QUEUED, TrainingRun.RUNNING):
            return None
        if run.attempts >= MAX_ATTEMPTS:
            run.status, run.finished = TrainingRun.FAILED, timezone.now()
            run.error = f"the worker stopped during this run {run.attempts} times (killed or out of memory)"
            run.save(update_fields=["status", "finished", "error"])
            return None
        if run.status == TrainingRun.RUNNING:
            run.log += f"[{timezone.now():%H:%M:%S}] the worker was lost; starting again\n"
        run.status, run.attempts, run.started = TrainingRun.RUNNING, run.attempts + 1, timezone.now()
        run.step, run.progress = 0, 0.0
        run.save(update_fields=["status", "attempts", "started", "step", "progress", "log"])
        TrainingStep.objects.filter(run=run).delete()
    return run


def run_training(run_id: int, *, progress: Callable[[int, int, dict], None] | None = None) -> TrainingRun:
    """Run a queued round to the end; safe to call twice (a finished run is left alone)."""
    run = _claim(run_id)
    if run is None:
        return TrainingRun.objects.get(pk=run_id)
    out_tmp: Path | None = None
    try:
        config = _run_config(run)
        rounds = [labelling_round(run.input_version)] if run.data_choice == TrainingRun.DATA_NEW else None
        data = round_data(reference=run.reference_version, max_length=config.max_length, dtype=config.dtype,
                          rounds=rounds, heldout_fraction=settings.PREFLOOP_HELDOUT_FRACTION,
                          heldout_min_pairs=settings.PREFLOOP_HELDOUT_MIN_PAIRS)
        pairs, rows = data.pairs, data.rows
        if not pairs:
            scope = f"of labelling round {rounds[0]} " if rounds else ""
            raise TrainingError(f"no decided pairs {scope}to train on yet: label some pairs first")
        TrainingRun.objects.filter(pk=run.pk).update(pairs=len(pairs))
        _log(run, f"{len(pairs)} pairs; reference {run.reference_version.name!r}; "
                  f"{sum(p.ref_chosen_logp is not None for p in pairs)} with cached reference log-probs; "
                  f"{len(data.heldout)} held-out pairs to measure the round on"
                  + ("" if data.holding_out or not settings.PREFLOOP_HELDOUT_FRACTION else
                     f" (fewer than {settings.PREFLOOP_HELDOUT_MIN_PAIRS} pairs: nothing held out of this round)"))
        settings.MODELS_DIR.mkdir(parents=True, exist_ok=True)
        out_tmp = Path(tempfile.mkdtemp(prefix=f".tmp-run-{run.pk}-", dir=settings.MODELS_DIR))
        result = _train(run, config, pairs, out_tmp, progress)
        store_reference_logps(run.reference_version, config.max_length, config.dtype, rows, result.reference_logps)
        version = _register(run, config, out_tmp)
        out_tmp = None
        run.refresh_from_db()
        run.status, run.finished, run.output_version, run.progress = TrainingRun.SUCCEEDED, timezone.now(), version, 1.0
        run.metrics = dict(run.metrics, **result.final_metrics, mean_loss=result.mean_loss, pairs=result.pairs,
                           pairs_per_s=result.pairs_per_s, peak_rss_mb=result.peak_rss_mb, seconds=result.seconds,
                           truncated=result.truncated, dropped=result.dropped)
        run.save()
        _log(run, f"registered version {version.name!r} as current")
        _evaluate(run, version, config, data)
    except Exception as exc:
        from .dpo.trainer import TrainingCancelled

        if isinstance(exc, TrainingCancelled):
            _log(run, "cancelled")
        else:
            log.exception("training run %s failed", run.pk)
            message = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
            TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.FAILED, error=message,
                                                         finished=timezone.now())
        if out_tmp is not None:
            shutil.rmtree(out_tmp, ignore_errors=True)
    run.refresh_from_db()
    return run


def _run_config(run: TrainingRun) -> DPOConfig:
    """The run's DPOConfig with its dtype fixed: "auto" becomes the product's (PREFLOOP_DTYPE on this worker), recorded
    in the run's params, so the page shows it, a retried attempt keeps it, and the processes of `accelerate launch`
    (which read the config file) compute in the same dtype as this worker would."""
    config = DPOConfig.from_dict(run.params)
    if config.dtype == "auto":
        config = DPOConfig.from_dict(dict(config.to_dict(), dtype=product_dtype()))
        run.params = dict(run.params, dtype=config.dtype)
        TrainingRun.objects.filter(pk=run.pk).update(params=run.params)
        _log(run, f"computing in {dtype_note()}")
    else:
        _log(run, f"computing in {describe_dtype(config.dtype, setting='this run')}")
    return config


def _evaluate(run: TrainingRun, version: ModelVersion, config: DPOConfig, data) -> None:
    """Measure the new version (held-out pairs, its own answers); a failure here is logged, the version stays."""
    from .evaluation import evaluate_round

    _log(run, f"measuring {version.name!r}: {len(data.heldout)} held-out pairs, "
              f"answers to up to {settings.PREFLOOP_ROUND_EVAL_PROMPTS} eval prompts")
    try:
        found = evaluate_round(version, run.reference_version, config, data.heldout, data.heldout_rows)
    except Exception as exc:  # the round itself succeeded: keep it, say what the measurement hit
        log.exception("measuring training run %s failed", run.pk)
        _log(run, f"measuring the round failed: {type(exc).__name__}: {exc}")
        return
    run.refresh_from_db(fields=["metrics"])
    run.metrics = dict(run.metrics, **found)
    TrainingRun.objects.filter(pk=run.pk).update(metrics=run.metrics)
    if "sampled/answers" in found:
        update_mean_length(version)
    _log(run, "measured: " + ", ".join(f"{k} {v:.4g}" for k, v in found.items()))
    _close_labelling_if_enough(run, found)


def _close_labelling_if_enough(run: TrainingRun, metrics: dict) -> None:
    """The labelling round whose pairs the run's input version sampled closes when the held-out measurement says
    more labels would not change much (its close_width; annotate.closing)."""
    round_ = Round.objects.filter(number=labelling_round(run.input_version)).first()
    reason = close_if_enough(round_, metrics) if round_ is not None else None
    if reason:
        _log(run, f"labelling round {round_.number} closed: {reason}")


def _train(run: TrainingRun, config: DPOConfig, pairs: list[PreferencePair], out_dir: Path, progress=None):
    from .dpo.trainer import train_dpo

    last_write = [0.0]

    def on_step(step: int, total: int, metrics: dict) -> None:
        TrainingStep.objects.update_or_create(run=run, step=step, defaults={"data": metrics})
        now = time.monotonic()
        if now - last_write[0] > 0.5 or step == total:
            last_write[0] = now
            TrainingRun.objects.filter(pk=run.pk).update(
                step=step, total_steps=total, progress=step / max(total, 1), metrics=metrics
            )
        if progress:
            progress(step, total, metrics)

    def should_stop() -> bool:
        return TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.CANCELLED).exists()

    if settings.PREFLOOP_TRAIN_PROCESSES > 1:  # DDP through `accelerate launch` (docs/deployment.md)
        from .launcher import train_in_processes

        workdir = out_dir.with_name(out_dir.name + "-launch")
        _log(run, f"training in {settings.PREFLOOP_TRAIN_PROCESSES} processes through accelerate launch")
        try:
            return train_in_processes(config, _full_path(run.input_version), pairs, out_dir,
                                      processes=settings.PREFLOOP_TRAIN_PROCESSES,
                                      reference_dir=_full_path(run.reference_version), on_step=on_step,
                                      should_stop=should_stop, workdir=workdir,
                                      allowed_terms=settings.PREFLOOP_LOSS_TERMS)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return train_dpo(config, _full_path(run.input_version), pairs, out_dir,
                     reference_dir=_full_path(run.reference_version), on_step=on_step, should_stop=should_stop,
                     allowed_terms=settings.PREFLOOP_LOSS_TERMS)


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
                version = register_version(name, folder, parent=parent, kind=kind, base=base)
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


def _log(run: TrainingRun, line: str) -> None:
    run.refresh_from_db(fields=["log"])
    run.log += f"[{timezone.now():%H:%M:%S}] {line}\n"
    TrainingRun.objects.filter(pk=run.pk).update(log=run.log)


def requeue_interrupted_runs() -> list[int]:
    """Send the runs left "running" by a worker that died to the queue again; returns their ids."""
    from .tasks import run_training

    ids = list(TrainingRun.objects.filter(status=TrainingRun.RUNNING).values_list("pk", flat=True))
    for run_id in ids:
        run_training.delay(run_id)
    return ids
