"""What the loop app does: run several rounds of generate → label → train → evaluate unattended.

It only orchestrates: the work is done by the generation, annotate (a judge labelling, `annotate.judging`), training
and compare (an evaluation, `compare.evaluation`) services. Commands, the admin, the API and the Celery task call
these functions.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.db import transaction

from annotate.judging import judge_account, label_pairs
from annotate.models import Label
from compare.evaluation import FOREGROUND, Evaluation, eval_prompts, evaluate
from compare.models import CompareJob
from compare.services import CompareError, acting
from compare.stats import length_warning
from generation.backends.base import MAX_SEED, GenerationCancelled, SamplingConfig
from generation.length import mean_tokens, truncated_count
from generation.models import GenerationJob, ModelVersion, Prompt, Response
from generation.services import (
    GenerationError,
    base_version,
    check_pairing,
    check_round_open,
    current_version,
    run_generation_job,
    start_generation_job,
)
from jobs import folder_judges, lifecycle
from jobs.lifecycle import JobCancelled, Tracker
from jobs.models import ACTIVE, Status
from judges import Judge, JudgeError, canonical_path, check_folder_access, load_judge
from prefloop.access import may
from prefloop.numerics import dtype_choice
from training.dpo.config import DPOConfig
from training.evaluation import mean_kl
from training.models import TrainingRun
from training.promotion import check_gate, gate_rule
from training.services import (
    DATA_CHOICES,
    MEASURED,
    TrainingError,
    check_loss_terms,
    record_round_figures,
    run_training,
    start_training_run,
)

from .models import LoopRun
from .presets import ALL, DEFAULT, preset_named

log = logging.getLogger(__name__)

# Upper bounds a person would call sane (each round trains a model; pairs and eval prompts are sampled per round).
MAX_ROUNDS, MAX_PAIRS, MAX_EVAL_PROMPTS = 100, 100_000, 10_000
STAGES = {"generate": (0.0, 0.3), "label": (0.3, 0.35), "train": (0.35, 0.8), "evaluate": (0.8, 1.0)}
# The evaluate stage's parts, as shares of it: each evaluation, then the KL. Both evaluations reported into the whole
# stage, so the second (the gate's, in a round that starts from a promoted version) moved the bar back from 100%.
EVALUATE_PARTS = {False: {"base": (0.0, 0.9), "kl": (0.9, 1.0)},
                  True: {"base": (0.0, 0.45), "start": (0.45, 0.9), "kl": (0.9, 1.0)}}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class LoopError(Exception):
    """Something a person can fix: no prompts, a version missing, a round that failed; names what and where."""


class AlreadyStarted(lifecycle.AlreadyActive, LoopError):
    """An active run with the same settings (the same form sent twice): `job` is that run."""


def sampling_config(data: dict | None = None, **overrides) -> SamplingConfig:
    """A round's sampling settings: the loop's defaults, then the run's, then `overrides`."""
    try:
        return SamplingConfig.from_dict({**DEFAULT.params()["sampling"], **(data or {}), **overrides})
    except ValueError as exc:
        raise LoopError(str(exc)) from None


# ---- loop runs ------------------------------------------------------------------------------------------------


PROMOTES = "generation.change_modelversion"


def start_loop_run(
    *, rounds: int, pairs: int, judge: str, tag: str = "", eval_limit: int = 64, seed: int = 0,
    params: dict | None = None, user=None, enqueue: bool = True, eval_judge: str = "", preset: str | None = None,
    foreground: bool = False,
) -> LoopRun:
    """Check the settings (the judges must load, prompts must exist), record the run and queue it.

    `foreground`: the calling process runs it (the run_loop command): no worker resumes it, as it would a lost
    worker's run (compare.evaluation.FOREGROUND), and Cancel still stops it, or ends it once it is silent for minutes.

    `preset` names the round's settings (`loop.presets`); `params` overrides any of them.

    `judge` labels the pairs; `eval_judge` (default: the same) votes on each round's answers against the base
    version, so a judge's quirks need not be both rewarded and confirmed by the same judge."""
    lifecycle.end_orphans()  # a killed command's run is not the twin this one is refused for
    for what, value, low, high in (("rounds", rounds, 1, MAX_ROUNDS), ("pairs", pairs, 1, MAX_PAIRS),
                                   ("eval prompts", eval_limit, 1, MAX_EVAL_PROMPTS), ("seed", seed, 0, MAX_SEED)):
        if not low <= value <= high:
            raise LoopError(f"{what} must be from {low} to {high:,} (got {value})")
    if len(tag) > 100 or not tag.isprintable():
        raise LoopError("tag: expected up to 100 printable characters")
    if user is not None and not may(user, PROMOTES):
        # each round's gate makes its version current when it passes, on the votes of judges the starter chose: as
        # checking the gate on the Train page or by the API needs, so starting the rounds that check it does
        raise LoopError(f"a loop makes the versions its gate passes current: starting one needs the permission "
                        f"{PROMOTES!r} besides 'loop.add_looprun'")
    check_folder_access(judge, user)  # before it is built: building it loads the folder's model
    load_judge(judge, dtype=dtype_choice())
    judge = canonical_path(judge)  # one spelling: the same loop typed two ways is one run (the twin check below)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise LoopError(f"loop settings must be an object, e.g. {{\"training\": {{...}}}} (got {type(params).__name__})")
    params = dict(params)
    for section in ("training", "sampling"):
        if section in params and not isinstance(params[section], dict):
            raise LoopError(f"loop setting {section!r} must be an object of settings "
                            f"(got {type(params[section]).__name__})")
    unknown = set(params) - {"training", "sampling", "pairing", "reference", "data", "eval_judge", "preset"}
    if unknown:
        raise LoopError(f"unknown loop setting {sorted(unknown)[0]!r} "
                        "(known: training, sampling, pairing, reference, data, eval_judge, preset)")
    named = params.pop("preset", None)
    try:
        chosen = preset_named(named or preset or "default")
        # one of them would be dropped without a word (an explicit "default" too: it is not "none given")
        if named and preset and preset_named(preset).name != chosen.name:
            raise LoopError(f"preset {preset!r} and the settings' own preset {named!r}: give one of them")
    except ValueError as exc:
        raise LoopError(str(exc)) from None
    named_eval = params.get("eval_judge")
    for value in (eval_judge, named_eval):
        if value is not None and not isinstance(value, str):  # 0, false, [] and {} too: none of them is "none given"
            raise LoopError(f"eval_judge must be a judge's 'package.module:attr' name (got {type(value).__name__})")
    # both given and not the same judge (spelt two ways is one): one of them was dropped without a word, as the
    # preset's would be above
    if eval_judge and named_eval and eval_judge.strip() and named_eval.strip() and \
            canonical_path(eval_judge) != canonical_path(named_eval):
        raise LoopError(f"eval judge {eval_judge!r} and the settings' own eval_judge {named_eval!r}: give one of them")
    # a blank one is none given (it fell through as "" and was refused as a bad --judge)
    eval_judge = (eval_judge or "").strip() or (named_eval or "").strip() or judge
    if eval_judge != judge:
        check_folder_access(eval_judge, user)
        load_judge(eval_judge, dtype=dtype_choice())
        eval_judge = canonical_path(eval_judge)
    params["eval_judge"] = eval_judge
    # Recorded as resolved, so a run resumed after an upgrade keeps the settings it started with.
    base = chosen.params()
    # A preset's sections are merged setting by setting: a run's {"training": {"beta": 0.2}} keeps the rest
    params = {**base, **params, "preset": chosen.name} | {
        section: {**base[section], **params.get(section, {})} for section in ("sampling", "training") if section in base}
    _check_params(params, judge)
    params.update(folder_judges.noted(user, judge, eval_judge))  # the unknown settings above refuse its key
    try:
        current = current_version()
    except Exception as exc:
        raise LoopError(str(exc)) from None
    if params.get("pairing") != "none":  # its first round's pairs go into the current version's labelling round
        try:
            check_round_open(current)
        except GenerationError as exc:
            raise LoopError(str(exc)) from None
    _train_prompts_left(tag, references=params["data"] == TrainingRun.DATA_SPIN)
    try:
        prompts = eval_prompts(tag=_eval_tag(tag), limit=eval_limit)
    except CompareError as exc:
        raise LoopError(str(exc)) from None
    # The same loop sent twice (a double click, a retried request) while the first is active: the second sampled and
    # labelled a round on the same prompts, then failed at training ("already queued or running") or trained on
    # the version the first had just replaced.
    with transaction.atomic():
        lifecycle.one_start_at_a_time(_START_LOCK)  # two sent in the same instant both found no twin, then both were created
        same = LoopRun.objects.filter(status__in=ACTIVE, rounds=rounds, pairs=pairs, judge=judge, tag=tag,
                                      eval_limit=eval_limit, seed=seed).order_by("pk")
        twin = next((other for other in same if _resolved(other.params) == _resolved(params)), None)
        if twin is not None:
            raise AlreadyStarted(f"loop run {twin.pk} with these settings is {twin.status} already: wait for it to "
                                 "end, or cancel it, to run it again", twin)
        # a command's run is its own process's: left part of nothing, a worker starting meanwhile took it for a lost
        # worker's and resumed it, and both worked on the same round
        run = LoopRun.objects.create(rounds=rounds, pairs=pairs, judge=judge, tag=tag, eval_limit=eval_limit,
                                     seed=seed, params=params, created_by=user, total=rounds,
                                     part_of=FOREGROUND if foreground else "")
        if warning := _gate_out_of_reach(len(prompts), eval_limit):
            _log(run, f"warning: {warning}")
    if enqueue:
        lifecycle.enqueue(run)
    return run


def _resolved(params: dict) -> tuple:
    """A run's settings as they act, for the twin check: sampling and training with every default filled in and a
    default pairing, reference and data given, so the same loop sent again with a default spelt out (sampling's
    temperature 0.8, say) is the same loop; compared literally it started a second run. A row stored before its
    settings were checked is taken as it is (compare.services.acting)."""
    sampling, training = acting(SamplingConfig, params.get("sampling")), acting(DPOConfig, params.get("training"))
    return (sampling, training, params.get("pairing", DEFAULT.pairing), params.get("reference", ALL.reference),
            params.get("data", ALL.data), params.get("eval_judge"), params.get("preset"))


# The key of the lock that starts of loop runs take on PostgreSQL (compare.services' is 0x100C).
_START_LOCK = 0x100B


def _check_params(params: dict, judge: str) -> None:
    sampling = sampling_config(params.get("sampling"))
    if "seed" in (params.get("sampling") or {}):
        raise LoopError("sampling.seed: each round draws its seed from the run's seed (--seed); set that instead")
    if (params.get("training") or {}).get("label_agreement") == MEASURED:
        raise LoopError("training settings: label_agreement 'measured' is measured on people's labels, and a loop's "
                        "labels come from its judge: give the agreement you expect of the judge as a number instead")
    try:
        config = DPOConfig.from_dict(params.get("training", {}))  # its defaults are for small rounds (docs/defaults.md)
    except ValueError as exc:
        raise LoopError(f"training settings: {exc}") from None
    if config.lora:  # refused now, not in round 2 after a round's sampling and labelling
        raise LoopError("training settings: lora: each round of a loop trains from the version the one before "
                        "promoted, and a LoRA adapter cannot be trained from (train from a full checkpoint): leave "
                        "lora off in a loop")
    try:  # a term that is not allowed or cannot run is refused now, not after a round's sampling and labelling
        check_loss_terms(config)
    except TrainingError as exc:
        raise LoopError(str(exc)) from None
    pairing = params.get("pairing", DEFAULT.pairing)
    try:
        check_pairing(pairing, judge if pairing == "judge" else "", sampling.n, sampling.temperature)
    except GenerationError as exc:
        raise LoopError(str(exc)) from None
    if params.get("reference", ALL.reference) not in ("base", "start"):
        raise LoopError(f"reference must be 'base' or 'start' (got {params['reference']!r})")
    if params.get("data", ALL.data) not in DATA_CHOICES:
        raise LoopError(f"data must be one of {', '.join(map(repr, DATA_CHOICES))} (got {params['data']!r})")
    if params.get("data") == TrainingRun.DATA_SPIN:  # refused now, not in round 2 after a round's sampling
        if params.get("reference", ALL.reference) != TrainingRun.REF_START:
            raise LoopError("data 'spin' trains each round against the version it starts from: reference must be "
                            "'start' (as the spin preset has it)")
        if pairing != "none":
            raise LoopError(f"data 'spin' reads no pair: pairing must be 'none' (got {pairing!r}), or the round "
                            "leaves pairs nobody labels in the queue (and a judge's pairing spends its calls)")
    elif pairing == "none":
        raise LoopError(f"pairing 'none' makes no pair to label: only data 'spin' trains without pairs "
                        f"(data is {params.get('data', ALL.data)!r})")


def _gate_out_of_reach(prompts: int, eval_limit: int) -> str:
    """Why no round of a loop evaluated on `prompts` eval prompts can be promoted, or "": the gate counts one vote per
    pair of answers, so a set smaller than PREFLOOP_GATE_MIN_VOTES never gives it enough. Said, not refused (a small
    set still measures each round against base); every round was kept with "needs 16 blind votes" and no word why."""
    need = gate_rule().min_votes
    if prompts >= need:
        return ""
    where = (f"--eval-limit {eval_limit}" if prompts == eval_limit
             else f"the eval split has {prompts} prompt{'s' if prompts != 1 else ''} for it")
    return (f"no round can be promoted: the gate needs {need} blind votes against the current version, and each "
            f"round's evaluation gives at most {prompts} ({where}); raise the eval limit to {need} or more, import "
            "more eval prompts (`manage.py import_prompts FILE --split eval`), or lower PREFLOOP_GATE_MIN_VOTES")


def _train_prompts_left(tag: str, *, references: bool = False) -> None:
    """Refuse a loop with no train prompts to sample (`references`: none with a reference answer, for self-play)."""
    prompts = Prompt.objects.filter(split=Prompt.TRAIN)
    if tag:
        prompts = prompts.filter(tag=tag)
    where = "the train split" + (f" with tag {tag!r}" if tag else "")
    if not prompts.exists():
        raise LoopError(f"no prompts in {where}: import some with `manage.py import_prompts FILE --split train`")
    if references and not prompts.filter(responses__is_reference=True).exists():
        raise LoopError(f"no prompt in {where} has a reference answer, which self-play (data 'spin') trains on: "
                        "import prompts with a 'reference' (or 'completion') column"
                        + (f" and --tag {tag}" if tag else ""))


def _eval_tag(tag: str) -> str:
    """Eval prompts share the run's tag when any eval prompt has it; otherwise the whole eval split is used."""
    if tag and Prompt.objects.filter(split=Prompt.EVAL, tag=tag).exists():
        return tag
    return ""


def cancel_loop_run(run: LoopRun) -> None:
    """Stop the run: at once if queued; if running, within seconds, inside whatever step it is in (sampling,
    labelling, training, measuring, evaluating). Finished rounds are kept; nothing of the round in flight is
    promoted. A version its training registered before the stop stays a candidate, and the run's log names it."""
    lifecycle.cancel(run)


def run_loop(run_id: int, *, progress: Progress | None = None,
             on_round: Callable[[dict], None] | None = None) -> LoopRun:
    """Run the rounds not done yet; safe to call again after a crash (finished rounds are kept in `results`, and
    the round a lost worker was in starts again)."""
    # a resumed run's bar starts from the rounds it kept: it stood where the lost attempt was, then went back
    run = lifecycle.claim(LoopRun, run_id, resume_at=lambda r: (len(r.results) / r.rounds, len(r.results)))
    if run is None:
        return LoopRun.objects.get(pk=run_id)
    if run.attempts > 1:
        # a training run that registered its round's version is resumed (measured, not trained again): ended here,
        # the round trained a second version and left the first a candidate no one measured
        lifecycle.end_parts(run, f"interrupted: the worker of loop run {run.pk} was lost, and the round starts again",
                            keep=_kept_training(run))
    tracker = Tracker(run)
    tracker.report(done=len(run.results), total=run.rounds, force=True)
    try:
        eval_path = eval_judge_of(run)
        # before either is built: its starter's permission to name a judge over a folder, as it is now
        folder_judges.check_creator(run, run.judge, eval_path)
        judge = load_judge(run.judge, dtype=dtype_choice())
        eval_judge = judge if eval_path == run.judge else load_judge(eval_path, dtype=dtype_choice())
        while len(run.results) < run.rounds:
            result = _one_round(run, judge, tracker, progress, eval_judge)  # stored with its gate's decision
            # a cancel from here stops before the next round: the stage says so, not the gate of the round just kept
            more = len(run.results) < run.rounds
            tracker.report(done=len(run.results), progress=len(run.results) / run.rounds, force=True,
                           **({"stage": f"before round {result['round'] + 1}"} if more else {}))
            _log(run, f"round {result['round']}: {result['version']} wins {result['win_rate_vs_base']} vs base; "
                      f"{result['truncated_answers']} of its {result['votes']['n']} eval answers hit the token limit "
                      f"(base: {result['base_truncated_answers']})")
            if on_round:
                on_round(result)
        _end_parts_left(run, Status.SUCCEEDED)
        lifecycle.finish(run)
    except (JobCancelled, GenerationCancelled):  # answering inside an evaluation stops with the latter
        kept = len(run.results)
        stage = LoopRun.objects.values_list("stage", flat=True).get(pk=run.pk)
        where = stage if stage.startswith("before round") else f"in {stage or 'its first step'}"
        _end_parts_left(run, Status.CANCELLED)
        head, candidate = f"{kept} round{'s' if kept != 1 else ''} kept; stopped ", _left_candidate(run)
        # where it stopped is shortened to the room the stage has left before the candidate its round registered:
        # a job's stage there ("train · measuring 'round-1': answering eval prompts: 0 of 3") cut that off ("it
        # stays a candidate, not…"). The longest opening lifecycle.stopped writes: "cancelled after N of N rounds: ";
        # and after the candidate "; …": the tail after it is cut by lifecycle.fit at a word within the field, which
        # took the candidate's last word with it when the candidate ended within 2 characters of the field's end
        room = lifecycle.STAGE_LENGTH - len(f"cancelled after {run.rounds} of {run.rounds} rounds: {head}{candidate}; …")
        lifecycle.stopped(run, head + _shortened(where, max(room, 24)) + candidate
                          + "; the samples, pairs and labels it stored stay")
    except Exception as exc:
        known = (JudgeError, LoopError, CompareError)
        if not isinstance(exc, known):
            log.exception("loop run %s failed", run.pk)
        # a run asked to stop that fails on the way ends cancelled (lifecycle.fail), and its parts say so: its row
        # held from the read to its end, so a Cancel landing between them cannot end the parts "failed" under a run
        # that ends "cancelled"
        with transaction.atomic():
            status = LoopRun.objects.select_for_update().values_list("status", flat=True).get(pk=run.pk)
            stopping = status == Status.CANCELLING
            _end_parts_left(run, Status.CANCELLED if stopping else Status.FAILED)
            lifecycle.fail(run, str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}")
    run.refresh_from_db()
    return run


def _shortened(where: str, room: int) -> str:
    """Where a run stopped in at most `room` characters: its last parts dropped, marked "…" ("in round 1: train ·
    measuring 'round-1': answering eval prompts: 0 of 3" without ": 0 of 3": cut at a word, it read "...prompts: 0…")."""
    if len(where) <= room:
        return where
    parts = re.split(r"(?=: | · )", where)[:-1]  # each part but the first with the ": " or " · " before it
    while len(parts) > 1 and len("".join(parts)) + 1 > room:  # room for the "…"
        parts.pop()
    return lifecycle.fit(("".join(parts) or where) + "…", room)


def _end_parts_left(run: LoopRun, ending: str) -> None:
    """End the parts the run kept to resume (a registered training run) and did not reach, so that none reads
    "running" on, before the run itself is ended `ending`: ended after it, a reader of the ended run (its page,
    run_loop's caller, the fault test's "nothing is left running") found its round's training run still running."""
    lifecycle.end_parts(run, f"left when loop run {run.pk} ended {ending}",
                        Status.FAILED if ending == Status.FAILED else Status.CANCELLED)


def _left_candidate(run: LoopRun) -> str:
    """The version the stopped round's training registered, if it got that far: it stays a candidate."""
    kept = {r["version"] for r in run.results}
    names = [n for n in TrainingRun.objects.filter(part_of=run.key, output_version__isnull=False).order_by("pk")
             .values_list("output_version__name", flat=True) if n not in kept]
    return f" (its training had registered {names[-1]!r}: it stays a candidate, not promoted)" if names else ""


def eval_judge_of(run: LoopRun) -> str:
    """The judge that evaluates a run's rounds (runs from before the setting evaluated with their labelling judge)."""
    return (run.params or {}).get("eval_judge") or run.judge


def _one_round(run: LoopRun, judge: Judge, tracker: Tracker, progress: Progress | None,
               eval_judge: Judge | None = None) -> dict:
    index = len(run.results)
    number = index + 1
    seconds: dict[str, float] = {}
    # stages a lost attempt of this round worked on: their seconds are this attempt's alone (the time the lost one
    # spent is not known; its jobs' start and end take in the time no worker ran), so they are marked partial
    partial: list[str] = []
    report = _stage_reporter(run, tracker, index, progress)
    params = run.params or {}
    spin = params.get("data") == TrainingRun.DATA_SPIN  # self-play: samples only, no labels, its own pairs trained

    report("generate", 0, 1)
    clock = time.perf_counter()
    start = current_version()
    base = base_version(start)
    config = sampling_config(params.get("sampling"), seed=run.seed + number)
    job = _round_generation_job(run, number, start)
    if job is not None:
        partial.append("generate")
    else:
        try:
            pairing = params.get("pairing", DEFAULT.pairing)
            job = start_generation_job(start, n_prompts=run.pairs, config=config, split=Prompt.TRAIN, tag=run.tag,
                                       pairing=pairing, judge=run.judge if pairing == "judge" else "", enqueue=False,
                                       part_of=run.key, with_reference=spin, noted={"loop_round": number})
        except GenerationError as exc:
            raise LoopError(f"round {number}: {exc}") from None
    tracker.on_child = lambda fraction, stage: report("generate", fraction, 1, stage, told=True)
    job = run_generation_job(job.pk, judge=judge, parents=[tracker])
    if job.status == job.CANCELLED:
        _ended_at(tracker, index, run.rounds, "generate", job)
        raise JobCancelled
    if job.status != job.SUCCEEDED:
        raise LoopError(f"round {number}: generation job {job.pk} {job.status}: {job.error}")
    seconds["generate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    labels = 0
    if not spin:  # self-play reads no label: the judge only evaluates
        report("label", 0, 1)  # before the judge's first label: a judge that failed on it was blamed on sampling
        # the round's labels, those a lost attempt stored too: this attempt's count alone said 0 for a round
        # resumed after its labelling (this attempt's count includes gold pairs mixed into the queue)
        stored = Label.objects.filter(pair__job=job, annotator=judge_account(run.judge)).count()
        labels = stored + label_pairs(run.judge, judge=judge, should_stop=tracker.should_stop, job=job,
                                      progress=lambda s, d, t: report("label", d, max(t, job.pairs_made))).labels
        if stored:
            partial.append("label")
    seconds["label"] = time.perf_counter() - clock

    report("train", 0, 1)
    clock = time.perf_counter()
    training = _round_training(run, number, start)
    if training is not None:
        partial.append("train")
    else:
        try:
            # a run recorded before presets has no data or reference: it ran what the `all` preset runs
            training = start_training_run(input_version=start, reference_choice=params.get("reference", ALL.reference),
                                          data_choice=params.get("data", ALL.data),
                                          params=dict(params.get("training", {})), enqueue=False, part_of=run.key)
        except TrainingError as exc:
            raise LoopError(f"round {number}: {exc}") from None
    tracker.on_child = lambda fraction, stage: report("train", fraction, 1, stage, told=True)
    training = run_training(training.pk, parents=[tracker])
    tracker.on_child = None
    if training.status == TrainingRun.CANCELLED:
        _ended_at(tracker, index, run.rounds, "train", training)
        raise JobCancelled
    if training.status != TrainingRun.SUCCEEDED:
        raise LoopError(f"round {number}: training run {training.pk} {training.status}: {training.error}")
    new = training.output_version
    seconds["train"] = time.perf_counter() - clock

    report("evaluate", 0, 1)
    clock = time.perf_counter()
    parts = EVALUATE_PARTS[start.pk != base.pk]
    if CompareJob.objects.filter(part_of=run.key, version_b=new).exists():  # a lost attempt's answers are reused
        partial.append("evaluate")

    def evaluate_against(old: ModelVersion, part: str) -> Evaluation:
        low, high = parts[part]

        def on_progress(stage: str, done: float, total: float) -> None:
            report("evaluate", low + (high - low) * min(1.0, done / max(total, 1)), 1, f"against {old.name}")

        return evaluate(old, new, eval_judge_of(run), tag=_eval_tag(run.tag), limit=run.eval_limit, seed=run.seed,
                        sampling=params.get("sampling"), judge=eval_judge or judge, progress=on_progress,
                        should_stop=tracker.should_stop, part_of=run.key)

    evaluation = evaluate_against(base, "base")
    record_round_figures(training, {"eval/win_rate_vs_base": evaluation.summary["win_rate_b"],
                                    "eval/ci95_low": evaluation.summary["ci95"][0],
                                    "eval/ci95_high": evaluation.summary["ci95"][1],
                                    "eval/votes": evaluation.summary["n"]})
    # The gate: a blind evaluation against the version the round started from, the current one.
    against_current = evaluation if start.pk == base.pk else evaluate_against(start, "start")
    # KL before the gate: a cancel while it is measured must not discard a round whose gate promoted its version
    report("evaluate", parts["kl"][0], 1, f"measuring KL of {new.name} to {base.name}")
    kl = mean_kl(new, base, evaluation.answers_b, should_stop=tracker.should_stop)
    report("evaluate", 1, 1, "the promotion gate")
    # The gate's decision and the round's result are stored together or not at all: a worker lost between the two
    # left the version promoted and the round in no result, and the next attempt, starting from the version then
    # current, trained the round again from it (the promoted version in no round's figures). Lost inside, nothing
    # of the decision stays, and the next attempt resumes the round (its training found) and decides once.
    with transaction.atomic():
        # a Cancel pressed up to here stops the round before its gate decides (the report just above read the run's
        # row through the half-second throttle): the version stays a candidate, and nothing of the round is promoted
        tracker.check(fresh=True)
        result = _decide(run, training, against_current, evaluation, start, number, spin, job, labels, kl)
        result["seconds"] = {k: round(v, 1) for k, v in {**seconds, "evaluate": time.perf_counter() - clock}.items()}
        if partial:
            result["seconds_partial"] = partial
            _log(run, f"round {number}: resumed after a lost worker: the seconds of {', '.join(partial)} are this "
                      "attempt's alone")
        results = [*run.results, result]
        # the round's figures are kept whatever: written through the tracker, they were lost when a person's cancel
        # had ended the run for silence meanwhile (its gate had decided, perhaps promoted)
        LoopRun.objects.filter(pk=run.pk).update(results=results)
    run.results = results
    return result


def _decide(run: LoopRun, training: TrainingRun, against_current: Evaluation, evaluation: Evaluation,
            start: ModelVersion, number: int, spin: bool, job: GenerationJob, labels: int, kl: float) -> dict:
    """Check the round's gate and make its result (without its seconds), inside the transaction that stores it."""
    new = training.output_version
    gate = check_gate(training, jobs=[against_current.job])
    # the figures the decision read (every vote on the set, a person's too; against the version then current), not
    # the evaluating judge's summary
    training.refresh_from_db(fields=["gate"])
    decided_on = training.gate["evidence"]

    tokens = _mean_tokens(evaluation.answers_b)
    previous = started_from(run.results, start.name) or {
        "win_rate_vs_base": 0.5, "mean_response_tokens": _mean_tokens(evaluation.answers_a)}
    metrics = training.metrics or {}
    result = {
        "round": number, "version": new.name, "pairs": training.pairs if spin else job.pairs_made,
        "labels": labels,
        "train_loss": _num(metrics.get("mean_loss")), "reward_accuracy": _num(metrics.get("rewards/accuracy")),
        "kl_to_base": _num(kl), "mean_response_tokens": _num(tokens),
        "base_response_tokens": _num(_mean_tokens(evaluation.answers_a)),
        "win_rate_vs_base": evaluation.summary["win_rate_b"], "ci95": evaluation.summary["ci95"],
        "votes": {k: evaluation.summary[k] for k in ("n", "b_wins", "a_wins", "ties", "both_bad")},
        "truncated_answers": truncated_count(evaluation.answers_b.values()),
        "base_truncated_answers": truncated_count(evaluation.answers_a.values()),
        "gate": {"decision": "promoted" if gate.passed else "kept", "against": training.gate["against"],
                 "win_rate": decided_on["win_rate"], "ci95": decided_on["ci95"], "votes": decided_on["votes"],
                 # what the rate and interval rest on: pairs of answers (several voters on one count once)
                 "pairs": decided_on.get("n", decided_on["votes"]), "reason": gate.reason},
        "current": new.name if gate.passed else training.gate["against"],
    }
    if gate.passed:
        _log(run, f"round {number}: promoted {new.name}: {gate.reason}")
    else:
        _log(run, f"round {number}: kept {start.name} ({new.name} stays a candidate): {gate.reason}")
    warning = length_warning(result["win_rate_vs_base"], previous["win_rate_vs_base"], tokens,
                             previous["mean_response_tokens"])
    if warning:
        result["warning"] = warning
        _log(run, f"round {number}: {warning}")
    return result


def started_from(results: list[dict], start: str) -> dict | None:
    """The figures of the round that made `start`, the version a round started from (None: base, or a version the
    run did not make): a round's length warning compares it with where it started, not with the round before it,
    whose candidate the gate may have kept back."""
    return next((r for r in reversed(results) if r.get("version") == start), None)


def _round_generation_job(run: LoopRun, number: int, start: ModelVersion) -> GenerationJob | None:
    """The generation job this round made before its worker was lost, to resume (a failed one samples only the
    prompts it has not answered; a finished one is read as it is): a new job took fresh prompts, so the round
    trained on the lost attempt's pairs and the new ones, and reported only the latter. None when the round has
    none yet, or its job sampled another version than the one now current."""
    made = [job for job in GenerationJob.objects.filter(part_of=run.key).order_by("-pk")
            if (job.params or {}).get("loop_round") == number]
    if made and made[0].version_id == start.pk and made[0].status != GenerationJob.CANCELLED:
        _log(run, f"round {number}: resuming generation job {made[0].pk} of the attempt that was lost")
        return made[0]
    return None


def _registered_in_lost_round(run: LoopRun, start: ModelVersion | None):
    """The run's training runs from `start` that registered a version no finished round kept: the lost round's."""
    kept = {r["version"] for r in run.results}
    return TrainingRun.objects.filter(part_of=run.key, input_version=start, output_version__isnull=False).exclude(
        output_version__name__in=kept)


def _kept_training(run: LoopRun) -> list[TrainingRun]:
    """The training run, still active, that registered the lost round's version before the worker was lost, when the
    round will resume it (_round_training: the version it started from is still current); any other is ended."""
    start = ModelVersion.objects.current()  # none: the round fails saying so, and keeps nothing to resume
    return list(_registered_in_lost_round(run, start).filter(status__in=ACTIVE))


def _round_training(run: LoopRun, number: int, start: ModelVersion) -> TrainingRun | None:
    """The training run of this round that registered its version in an attempt that was lost (the version in no
    finished round), to resume: run_training then measures it and trains nothing. A finished one is read as it is
    (the round was lost after it, while evaluating). None when there is none."""
    found = (_registered_in_lost_round(run, start).filter(status__in=[*ACTIVE, TrainingRun.SUCCEEDED])
             .select_related("output_version").order_by("-pk").first())
    if found is not None:
        _log(run, f"round {number}: resuming training run {found.pk}, which registered {found.output_version.name!r} "
                  "before the worker was lost (measured, not trained again)")
    return found


def _mean_tokens(answers: dict[int, Response]) -> float:
    mean = mean_tokens(answers.values())
    return float("nan") if mean is None else mean


def _num(x) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def _ended_at(tracker: Tracker, index: int, rounds: int, stage: str, part) -> None:
    """The run's bar where its round's job `part`, ended cancelled, ended its own: at what the job kept (a generation
    job's prompts stored, a training run's steps taken), not at the last report it passed up, which counted what it
    then dropped (the tokens of the chunk it sampled) or was held back by the throttle (a step within a second of the
    last written): the run's bar stood at 10% of its round over a generation job ended at 0 of 4 prompts kept."""
    tracker.report(progress=run_fraction(index, rounds, stage, part.progress, 1), force=True)


def _stage_reporter(run: LoopRun, tracker: Tracker, index: int, progress: Progress | None):
    """Record the stage and overall progress on the run (throttled by the tracker) and pass it on; stop if
    cancelled. `detail`: what a job inside the round says it is doing. `told`: the report is that job's own, passed
    up once its row holds it (Tracker.on_child): written before the look for a cancel, so a run stopped then ends at
    the stage and bar its job reached. Looked for first, a Cancel pressed as the job named a new stage ended the run
    "stopped in round 1: train · loading the model" under a training run saving its checkpoint, its step taken."""

    def report(stage: str, done: float, total: float, detail: str = "", *, told: bool = False) -> None:
        if not told:  # a stage of the loop's own: a cancel stops it before it starts
            tracker.check()
        fraction = run_fraction(index, run.rounds, stage, done, total)
        tracker.report(progress=fraction, stage=f"round {index + 1}: {stage}" + (f" · {detail}" if detail else ""))
        if progress:
            progress(stage, done, total)
        if told:
            tracker.check()

    return report


def run_fraction(index: int, rounds: int, stage: str, done: float, total: float) -> float:
    """The share of a whole run done when round `index` (from 0) is `done` of `total` into `stage`: one formula for
    the run's row and for run_loop's bar, which is told (stage, done, total)."""
    low, high = STAGES[stage]
    return (index + low + (high - low) * min(1.0, done / max(total, 1))) / rounds


_log = lifecycle.append_log
