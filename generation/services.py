"""What the generation app does: register versions, run generation jobs (pairs for labelling), answer prompts.

Views, admin actions, tasks and commands call these functions; the sampling itself lives in
`generation.backends` and the pair choice in `generation.pairing`, neither of which knows Django.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg

from annotate.models import LabellingRound, Pair, in_lock_order
from annotate.selection import ScoringCancelled, prepare_queue
from jobs import folder_judges, lifecycle
from jobs.folder_judges import FolderJudgeRefused
from jobs.lifecycle import JobCancelled, Tracker
from jobs.models import ACTIVE
from judges import JudgeError, check_folder_access, load_judge, verdict
from prefcore.chat import prompt_text
from prefcore.outcomes import cut_rule
from prefloop.numerics import dtype_choice, product_dtype

from .backends import load_backend
from .backends.base import MAX_TEMPERATURE, MIN_TEMPERATURE, GenerationCancelled, SamplingConfig
from .backends.vllm import CanaryMismatch
from .bootstrap import bootstrap_checkpoint
from .models import GenerationJob, ModelVersion, Prompt, Response, VersionChange
from .pairing import STRATEGIES, choose_pairs, round_robin_scores

log = logging.getLogger(__name__)

# judge: best against worst by a judge's round robin; none: samples only, no pairs (self-play trains on them)
PAIRING_STRATEGIES = (*STRATEGIES, "judge", "none")
# Rows (prompts x K samples) per sampling call, a progress commit after each: enough to fill the default batch of
# 128 rows whatever K (a chunk of 16 prompts was 32 rows at K=2). `bench/sampling_batch.py`, 48 prompts x 4 samples
# on 2 AMX cores: 59.4 s at batch 32 in chunks of 16 prompts, 37.7 s at batch 128 in the same chunks, 37.6 s in
# chunks of 128 rows. A job records its chunk size in prompts, and its chunks are fixed slices of its prompt list: in
# bf16 a sample may change with the batch it shares (docs/numerics.md), so a resumed or re-run job must sample every
# chunk with the same neighbours.
CHUNK_ROWS = 128
LEGACY_CHUNK_PROMPTS = 16  # the chunk size of jobs queued before jobs recorded theirs
MAX_PROMPTS_PER_JOB = 100_000  # as on the generation page
MAX_JUDGED_SAMPLES = 8  # pairing "judge" calls the judge K(K-1)/2 times a prompt: 28 at 8
# A chunk's share of the bar the judge's ranking takes under pairing "judge": sampling took it all, so the bar stood
# still while an LLM judge made its K(K-1)/2 calls a prompt. Half is a guess (a rule judge takes no time, an LLM
# judge about as long as the sampling) that keeps the bar moving and the time left within a factor of two.
JUDGE_SHARE = 0.5


class GenerationError(Exception):
    """Something a person can fix: no version, no prompts left, a bad setting."""


# ---- versions -------------------------------------------------------------------------------------------------


def folder_size(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def register_version(
    name: str, path: str | Path, *, parent: ModelVersion | None = None, kind: str = ModelVersion.FULL,
    base: ModelVersion | None = None, make_current: bool = True,
    claim: Callable[[ModelVersion], None] | None = None,
) -> ModelVersion:
    """Record a complete checkpoint folder as a version (and, by default, make it the current one). `claim(version)`
    runs in the same transaction: what the version belongs to (the training run that made it) is written with it,
    or neither is."""
    # stored absolute: a relative folder was kept as typed and read later from another working directory (the
    # worker's, the web app's), where it names nothing or another model
    path = Path(path).expanduser().resolve()
    if problem := version_folder_problem(path, kind):
        raise GenerationError(problem)
    size = folder_size(path)
    with transaction.atomic():
        version = ModelVersion.objects.create(
            name=name, path=str(path), parent=parent, round=(parent.round + 1) if parent else 0, kind=kind,
            base=base, size_bytes=size,
        )
        if make_current:
            set_current(version)
        if claim is not None:
            claim(version)
    return version


def set_current(version: ModelVersion) -> None:
    with transaction.atomic():
        ModelVersion.objects.filter(is_current=True).exclude(pk=version.pk).update(is_current=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_current=True)
    version.is_current = True


def change_current(version: ModelVersion, *, action: str, user=None, reason: str = "") -> VersionChange:
    """Make `version` current and record who did it, how (gate, by hand, rollback) and why."""
    with transaction.atomic():
        previous = ModelVersion.objects.select_for_update().filter(is_current=True).first()
        if previous is not None and previous.pk == version.pk:
            raise GenerationError(f"version {version.name!r} is already the current one")
        set_current(version)
        return VersionChange.objects.create(version=version, previous=previous, action=action, user=user,
                                            reason=reason.strip())


def rollback_to(version: ModelVersion, *, user=None, reason: str = "") -> VersionChange:
    """One click on the versions table: an earlier version becomes current again, recorded."""
    return change_current(version, action=VersionChange.Action.ROLLBACK, user=user, reason=reason)


def current_version() -> ModelVersion:
    version = ModelVersion.objects.current()
    if version is None:
        raise GenerationError("there is no current model version: run `python manage.py bootstrap_model` first")
    return version


def base_version(version: ModelVersion) -> ModelVersion:
    """The root of a version's lineage: the SFT model the loop started from."""
    return version.lineage()[0]


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")  # what transformers and vLLM load a model's weights from
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # and peft an adapter's


def _holds_weights(path: Path, patterns: Iterable[str]) -> bool:
    """Whether the folder holds a file matching one of the weights' patterns (WEIGHT_FILES, ADAPTER_WEIGHT_FILES):
    the check a version's folder (`version_folder_problem`) and base's checkpoint (`checkpoint_problem`) share.
    The second does not call the first: it reads config.json as JSON before it looks for weights, and names what is
    missing in bootstrap_model's own words, which differ from the API's and the admin's."""
    return any(f.is_file() for pattern in patterns for f in path.glob(pattern))


def given_folder(typed: str) -> Path:
    """A folder a person typed for a version (the admin's form, POST /versions): absolute, `~` expanded, or a
    GenerationError saying why not. A relative one was read from the web server's working directory, and a worker
    reads the stored path from its own."""
    try:
        folder = Path(typed.strip()).expanduser()
    except RuntimeError:  # ~user of no account on the server
        raise GenerationError(f"{typed!r} names no home folder on the server") from None
    if not folder.is_absolute():
        raise GenerationError(f"{typed!r} is relative; give the folder's absolute path on the server")
    try:
        return folder.resolve()
    except (OSError, RuntimeError) as exc:  # a name too long, a loop of links
        raise GenerationError(f"{typed[:200]!r} cannot be read on the server: {getattr(exc, 'strerror', None) or exc}") from None


def version_folder_problem(path: Path, kind: str = ModelVersion.FULL) -> str | None:
    """Why a folder cannot be registered as a version of its kind, naming the file it lacks; None when it holds the
    configuration and weights. Every registration reads it (the API, the admin's, a round's, "base"): a folder
    holding a config.json alone was registered, and the first job on the version failed in a worker."""
    marker, weights, what = (("adapter_config.json", ADAPTER_WEIGHT_FILES, "LoRA adapter") if kind == ModelVersion.LORA
                             else ("config.json", WEIGHT_FILES, "model checkpoint"))
    try:
        if not (path / marker).is_file():
            return f"{path} holds no {marker}: not a {what} folder"
        if not _holds_weights(path, weights):
            return f"{path} holds no weights ({', '.join(weights)}): the {what} is not all there"
    except OSError as exc:  # a name too long for the file system, a folder the server may not read: not a 500
        return f"{str(path)[:200]!r} cannot be read on the server: {exc.strerror or exc}"
    return None
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def checkpoint_problem(path: Path) -> str | None:
    """Why a folder is no full checkpoint a version can sample from, naming the file; None when it looks like one.
    Read before "base" is registered and made current: a folder with any config.json (even "garbage", or no weights
    beside it) became the model every job loads, and failed only there, in the worker."""
    if not path.is_dir():
        return f"{path} is not a folder" if path.exists() else f"{path} does not exist"
    config = path / "config.json"
    if not config.is_file():
        return f"{path} holds no checkpoint (no config.json)"
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"{config} is not a model's config (not JSON: {exc})"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_type"), str) or not parsed["model_type"]:
        return f"{config} is not a model's config (no model_type, as transformers writes one)"
    if not _holds_weights(path, WEIGHT_FILES):
        return f"{path} holds no weights (no {' or '.join(WEIGHT_FILES)} beside its config.json)"
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return f"{path} holds no tokenizer (no {', '.join(TOKENIZER_FILES)})"
    return None


def _referenced(version: ModelVersion) -> bool:
    """Whether any row points at the version (a child, an adapter, a job, an answer, a comparison, a run...)."""
    for relation in ModelVersion._meta.related_objects:  # every table with a key onto versions, added ones too
        if relation.related_model._default_manager.filter(**{relation.field.name: version}).exists():
            return True
    return False


def bootstrap_base(target: str | Path | None = None) -> ModelVersion:
    """Idempotent: the version "base" for the default model (or PREFLOOP_BASE_MODEL), bootstrapped when missing.

    A "base" registered at a folder that holds no usable checkpoint, which nothing was made from yet, is pointed at
    the checkpoint given now (`target`, a person's --path): registered by mistake (a typo'd --path, before
    checkpoints were checked), it was current and the command refused every other path, with nothing at the command
    line to undo it. Without a target (`make run` calls it at every start) the registered base is kept as it is: a
    folder missing for a while (a disk not mounted yet) is no reason to swap the model for PREFLOOP_BASE_MODEL's."""
    path = Path(target or settings.PREFLOOP_BASE_MODEL).expanduser().resolve()
    where = str(path) if target else f"PREFLOOP_BASE_MODEL={path}"
    existing = ModelVersion.objects.filter(name="base").first()
    if existing is not None:
        if Path(existing.path).expanduser().resolve() == path:
            return existing
        if target is None:
            return existing
        broken = checkpoint_problem(Path(existing.path))
        if broken is None:
            # said, not ignored: the person meant to start from that checkpoint, and every round would use another
            raise GenerationError(f"the version 'base' is registered already, at {existing.path}: {path} is not "
                                  "used (a fresh data folder, PREFLOOP_DATA_DIR, starts from another base model)")
        if _referenced(existing):
            raise GenerationError(
                f"the version 'base' is registered already, at {existing.path}, which holds no usable checkpoint "
                f"({broken}), and rounds, jobs or answers refer to it: put its checkpoint back at {existing.path}, "
                "or start a fresh data folder (PREFLOOP_DATA_DIR)")
    if not (path / "config.json").exists():
        if path != (settings.MODELS_DIR / "smollm2-135m-instruct").expanduser().resolve():
            raise GenerationError(f"{where} holds no checkpoint (no config.json)")
        bootstrap_checkpoint(path)
    if problem := checkpoint_problem(path):
        raise GenerationError(problem if target else f"PREFLOOP_BASE_MODEL: {problem}")
    if existing is not None:  # nothing refers to it: the same version (current or not), now at a usable folder
        with transaction.atomic():
            ModelVersion.objects.filter(pk=existing.pk).update(path=str(path), size_bytes=folder_size(path))
        existing.refresh_from_db()
        return existing
    make_current = not ModelVersion.objects.filter(is_current=True).exists()
    return register_version("base", path, make_current=make_current)


# ---- backends -------------------------------------------------------------------------------------------------

_backend_cache: dict[str, object] = {}


def backend_for(version: ModelVersion, dtype: str | None = None):
    """A sampling backend for a version in `dtype` (default: the product's, PREFLOOP_DTYPE), kept loaded for the
    next job in the same worker process."""
    dtype = dtype or product_dtype()
    if version.kind == ModelVersion.LORA and version.base is None:
        raise GenerationError(f"version {version.name!r} (#{version.pk}) is a LoRA adapter without the full checkpoint "
                              "it applies to: set its base in the admin")
    key = f"{_model_key(version)}:{dtype}"
    if key not in _backend_cache:
        for old in _backend_cache.values():
            old.close()
        _backend_cache.clear()
        try:  # the vLLM backend checks its canary on every load and raises if it serves other weights
            if version.kind == ModelVersion.LORA:
                backend = load_backend(version.base.path, kind=settings.PREFLOOP_BACKEND, adapter_path=version.path,
                                       adapter_name=f"v{version.pk}-{version.name}", dtype=dtype, **_engine_options())
            else:
                backend = load_backend(version.path, kind=settings.PREFLOOP_BACKEND, dtype=dtype, **_engine_options())
        except CanaryMismatch as exc:
            raise GenerationError(f"version {version.name!r} (#{version.pk}): {exc}") from exc
        _backend_cache[key] = backend
    return _backend_cache[key]


def _model_key(version: ModelVersion) -> str:
    """The version's model as loaded: its folders (an adapter's base too), what their files are now, the backend."""
    folders = [version.path] + ([version.base.path] if version.kind == ModelVersion.LORA and version.base else [])
    return (f"{version.pk}:{version.path}:{':'.join(_checkpoint_stamp(f) for f in folders)}:"
            f"{settings.PREFLOOP_BACKEND}")


def _checkpoint_stamp(path: str) -> str:
    """What the files of a checkpoint folder are now (name, size, modification time): a folder written again under
    the same version id (a database restored from a backup, a retrained run) is loaded afresh, never served from the
    weights that were there before."""
    try:
        entries = sorted((e.name, st.st_size, st.st_mtime_ns) for e in os.scandir(path) if e.is_file()
                         for st in (e.stat(),))
    except OSError:
        return "missing"
    return hashlib.sha1(repr(entries).encode()).hexdigest()[:16]


def _engine_options() -> dict:
    return {
        "tensor_parallel_size": settings.PREFLOOP_VLLM_TP,
        "gpu_memory_utilization": settings.PREFLOOP_VLLM_GPU_MEMORY,
    }


def release_backends() -> None:
    for backend in _backend_cache.values():
        backend.close()
    _backend_cache.clear()


def storable_text(text: str) -> str:
    """Sampled text without NUL characters, which PostgreSQL text columns refuse."""
    return text.replace("\x00", "")


def prompt_seed(seed: int, prompt_id: int) -> int:
    """The per-prompt seed: the same for every version, so two versions answer under the same randomness.

    Distinct job seeds give a prompt distinct seeds. The mix is a bijection of the seed modulo the prime, and a seed
    at or past the prime (MAX_SEED is the prime itself) keeps its multiple of the prime: reduced alone, job seed
    2**31 - 1 answered every prompt as job seed 0 did. Seeds below the prime keep the per-prompt seeds they always
    had, so stored answers (keyed by them) and resumed jobs stay as they were."""
    prime = 2**31 - 1
    return seed - seed % prime + (seed * 1_000_003 + prompt_id * 7919) % prime


def sampling_key(config: SamplingConfig, seed: int) -> str:
    data = dict(config.to_dict(), seed=seed, batch_size=None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ---- generation jobs ------------------------------------------------------------------------------------------


def select_prompts(version: ModelVersion, n_prompts: int, *, split: str = "train", tag: str = "", seed: int = 0,
                   with_reference: bool = False, max_new_tokens: int | None = None) -> list[int]:
    """Up to n prompts of the split (and tag) that this version has not answered yet, nor a queued or running job
    of it is to answer, in a seeded random order; `with_reference`: only prompts with a reference answer (what a
    self-play round trains on). `max_new_tokens`: not the prompts an earlier job of this version left out as too long
    for the model's context with as few new tokens or fewer (each job came up short by them again)."""
    answered = Response.objects.filter(version=version, is_reference=False).values("prompt_id")
    taken = {pk for params in GenerationJob.objects.filter(version=version, status__in=ACTIVE)
             .values_list("params", flat=True) for pk in (params or {}).get("prompt_ids", [])}
    if max_new_tokens is not None:
        skipped = GenerationJob.objects.filter(version=version, params__has_key="skipped_prompt_ids")
        taken.update(pk for params in skipped.values_list("params", flat=True)
                     if (params.get("sampling") or {}).get("max_new_tokens", 0) <= max_new_tokens
                     for pk in params["skipped_prompt_ids"])
    prompts = Prompt.objects.filter(split=split).exclude(pk__in=answered)
    if tag:
        prompts = prompts.filter(tag=tag)
    if with_reference:
        prompts = prompts.filter(pk__in=Response.objects.filter(is_reference=True).values("prompt_id"))
    ids = sorted(set(prompts.values_list("pk", flat=True)) - taken)  # in Python: up to 100,000 ids a job
    random.Random(seed).shuffle(ids)
    return ids[:n_prompts]


def check_pairing(pairing: str, judge: str, samples: int, temperature: float | None = None) -> None:
    """A GenerationError unless `pairing` can choose pairs from `samples` samples a prompt sampled at `temperature`
    (None: not checked); pairing "judge" needs a judge that loads and at most MAX_JUDGED_SAMPLES samples, and no
    other pairing takes a judge."""
    if pairing not in PAIRING_STRATEGIES:
        raise GenerationError(f"pairing must be one of {', '.join(PAIRING_STRATEGIES)} (got {pairing!r})")
    if samples < 2 and pairing != "none":  # here, so every start (a loop's too) refuses it before anything runs
        raise GenerationError(f"samples per prompt must be at least 2 to make a pair (got {samples})")
    if temperature == 0 and pairing != "none":
        # Greedy decoding gives the K samples of a prompt as one answer K times, and a pair of the same answer twice
        # is never made: the job ran to the end and said "0 pairs queued".
        raise GenerationError(f"temperature 0 samples greedily: the {samples} samples per prompt would be {samples} "
                              f"identical answers, so pairing {pairing!r} can make no pair; set temperature from "
                              f"{MIN_TEMPERATURE} to {MAX_TEMPERATURE}, or pairing 'none' for samples only")
    if pairing != "judge":
        if judge:
            raise GenerationError(f"a judge ranks samples only with pairing 'judge' (pairing is {pairing!r})")
        return
    if samples > MAX_JUDGED_SAMPLES:
        raise GenerationError(f"pairing 'judge' ranks at most {MAX_JUDGED_SAMPLES} samples per prompt (got "
                              f"{samples}: that would be {samples * (samples - 1) // 2} judge calls a prompt)")
    if not judge:
        raise GenerationError("pairing 'judge' needs a judge, e.g. 'judges.rules:length_target'")
    try:
        load_judge(judge, dtype=dtype_choice())
    except JudgeError as exc:
        raise GenerationError(str(exc)) from None


def start_generation_job(
    version: ModelVersion | None = None, *, n_prompts: int, config: SamplingConfig | None = None, split: str = "train",
    tag: str = "", pairing: str = "random", judge: str = "", user=None, enqueue: bool = True, part_of: str = "",
    with_reference: bool = False, noted: dict | None = None,
) -> GenerationJob:
    """Choose the prompts now (so a resumed job samples the same ones) and queue the job. `part_of`: the key of the
    job that runs this one inside it (then `enqueue` is False). `with_reference`: only prompts with a reference
    answer; with pairing "none" the job stores samples and makes no pair (a self-play round's sampling). `noted`:
    what the job that runs this one records in its params with it (a loop run: the round), in the same write.

    With pairing "judge", the judge named by `judge` ranks each prompt's K samples in a round robin and the best
    meets the worst: K(K-1)/2 judge calls per prompt.
    """
    lifecycle.end_orphans()  # a killed command's job holds no prompts from this one
    version = version or current_version()
    config = config or SamplingConfig()
    if not 1 <= n_prompts <= MAX_PROMPTS_PER_JOB:
        raise GenerationError(f"number of prompts must be from 1 to {MAX_PROMPTS_PER_JOB:,} (got {n_prompts})")
    if len(tag) > 100 or not tag.isprintable():
        raise GenerationError("tag: expected up to 100 printable characters")
    try:  # before check_pairing builds the judge: its failure on a folder would say whether a checkpoint is there
        check_folder_access(judge, user)
    except JudgeError as exc:
        raise GenerationError(str(exc)) from None
    check_pairing(pairing, judge, config.n, config.temperature)
    if pairing != "none":  # samples only make no pair, so they wait on no round
        check_round_open(version)
    # One job at a time chooses a version's prompts: a form sent twice (a double click, a retried request) is two
    # requests, and each took the same prompts and seeds, so every pair was made twice and labelled twice.
    with transaction.atomic():
        list(ModelVersion.objects.select_for_update(no_key=True).filter(pk=version.pk).values_list("pk"))
        prompt_ids = select_prompts(version, n_prompts, split=split, tag=tag, seed=config.seed,
                                    with_reference=with_reference, max_new_tokens=config.max_new_tokens)
        if not prompt_ids:
            where = (f"split {split!r}" + (f" with tag {tag!r}" if tag else "")
                     + (" with a reference answer" if with_reference else ""))
            raise GenerationError(f"no prompts left in {where} that version {version.name!r} has not answered "
                                  "(nor a queued or running job of it is to answer: cancel one to free its prompts)")
        job = GenerationJob.objects.create(
            version=version, created_by=user, total=len(prompt_ids), part_of=part_of,
            params={"sampling": config.to_dict(), "split": split, "tag": tag, "pairing": pairing,
                    "prompt_ids": prompt_ids, "chunk_prompts": chunk_prompts(config),
                    **({"judge": judge} if judge else {}), **(noted or {}),
                    # a job run inside another is given its judge built, by the job its starter's permission is read for
                    **(folder_judges.noted(user, judge) if pairing == "judge" and not part_of else {})},
        )
    if enqueue:
        lifecycle.enqueue(job)
    return job


def check_round_open(version: ModelVersion) -> None:
    """A GenerationError when the labelling round the version's pairs go into has closed: no one is given a closed
    round's pairs (as annotate.importers.import_pairs refuses to import into one), so they would wait for labels for
    good while the rounds page counted them open. A round never opens again: its version's pairs are done."""
    closed = LabellingRound.objects.filter(number=version.round + 1, closed_at__isnull=False).first()
    if closed is not None:
        raise GenerationError(
            f"labelling round {closed.number}, where pairs sampled from version {version.name!r} go, has closed "
            f"({closed.closed_reason or 'no reason given'}): no one would be given new pairs in it; sample from a "
            "newer version, or with pairing 'none' for samples only")


def _labelling_round(version: ModelVersion) -> LabellingRound:
    """The labelling round a job's pairs from this version go into (its round + 1), made if it is not there yet; a
    GenerationError when it has closed (check_round_open), for a job started before the close."""
    check_round_open(version)
    round_, _ = LabellingRound.objects.get_or_create(number=version.round + 1)
    return round_


def run_generation_job(job_id: int, *, progress: Callable[[int, int], None] | None = None, judge=None,
                       parents: Iterable[Tracker] = (),
                       on_report: Callable[[float, str], None] | None = None) -> GenerationJob:
    """Sample the job's prompts that have no responses yet, chunk by chunk; safe to run again after a crash.

    `judge`: the loaded judge of a "judge" pairing job, when the caller has it already (else it is loaded by name).
    `parents`: trackers of the jobs this one runs inside (a loop run): cancelling one of them stops this job too.
    `progress(done, total)` after each stored chunk; `on_report(fraction, stage)` at every report of the job's
    progress (Tracker.on_report): inside a chunk as its tokens are sampled and its samples judged, and after.
    A cancelled job stops inside the chunk it is sampling and stores nothing of that chunk.
    """
    job = lifecycle.claim(GenerationJob, job_id, retry_failed=True, resume_at=_resumed_at)
    if job is None:
        return GenerationJob.objects.get(pk=job_id)
    tracker = Tracker(job, parents=parents)
    tracker.on_report = on_report
    try:
        _sample_job(job, tracker, progress, judge)
    except FolderJudgeRefused as exc:  # the person's permission, read again: a refusal, no traceback
        lifecycle.fail(job, str(exc))
    except (JobCancelled, GenerationCancelled):
        # the bar ends at the prompts it kept: the tokens of the chunk it dropped stayed on it (37% of a job that kept
        # none of its prompts). Its count and pairs too, from what is stored: a loop run's cancel, raised as a prompt
        # deleted meanwhile was left out, came between a chunk's commit and its count (said "0 of 3 prompts: 0 pairs
        # kept", the bar at 1/3, with the chunk's prompt and pair stored)
        at, done = _resumed_at(job)
        pairs = Pair.objects.filter(job=job).count()
        GenerationJob.objects.filter(pk=job.pk, status__in=ACTIVE).update(done=done, pairs_made=pairs)
        lifecycle.stopped(job, f"{pairs} pair{'s' if pairs != 1 else ''} kept", progress=at)
    except Exception as exc:  # recorded on the job for the page; the worker log has the traceback
        log.exception("generation job %s failed", job.pk)
        lifecycle.fail(job, f"{type(exc).__name__}: {exc}")
        raise
    job.refresh_from_db()
    return job


def _resumed_at(job: GenerationJob) -> tuple[float, int]:
    """(progress, done) a resumed or retried attempt starts from: the prompts of the chunks stored. It samples again
    from the chunk the last attempt was in, whose tokens that attempt's bar had counted: left there, the bar went
    back at the new attempt's first report, which named no reason."""
    done = Response.objects.filter(job=job).values("prompt_id").distinct().count()
    total = len(job.params["prompt_ids"]) - len(job.params.get("skipped_prompt_ids", ()))
    return done / max(total, 1), done


def _sample_job(job: GenerationJob, tracker: Tracker, progress, judge=None) -> None:
    config = SamplingConfig.from_dict(job.params["sampling"])
    prompt_ids = job.params["prompt_ids"]
    # prompts left out for the model's context (below): not sampled again when the job resumes, nor counted
    skipped = set(job.params.get("skipped_prompt_ids", ()))
    done = set(Response.objects.filter(job=job).values_list("prompt_id", flat=True).distinct())
    todo = [pid for pid in prompt_ids if pid not in done and pid not in skipped]
    total = len(prompt_ids) - len(skipped)
    if todo and job.params.get("pairing") == "judge" and judge is None:
        # the judge is built below from its name: its starter's permission to name one over a folder, as it is now,
        # before a model is loaded or a round made
        folder_judges.check_creator(job, job.params.get("judge", ""))
    # pairs_made counted again: a worker lost after a chunk was stored, before the job's row counted it, left the
    # chunk's pairs out of it for good (a resumed job said "0 pairs kept" with the pairs in the queue)
    tracker.report(done=total - len(todo), total=total, progress=(total - len(todo)) / max(total, 1), force=True,
                   stage="loading the model" if todo else "", pairs_made=Pair.objects.filter(job=job).count())
    round_ = _labelling_round(job.version) if job.params.get("pairing") != "none" else None  # none: no pairs
    backend = backend_for(job.version, _job_dtype(job)) if todo else None
    if todo and job.params.get("pairing") == "judge" and judge is None:
        judge = load_judge(job.params["judge"], dtype=dtype_choice())
    deleted = "the prompt was deleted after the job started"

    def leave_out(why_by_id: dict[int, str]) -> None:
        """Prompts the job does not answer, each named in the log, the total lowered (and remembered on a resume)."""
        nonlocal total
        for pid, why in why_by_id.items():
            lifecycle.append_log(job, f"skipped prompt {pid}: {why}")
        skipped.update(why_by_id)
        total -= len(why_by_id)
        job.params["skipped_prompt_ids"] = sorted(skipped)
        GenerationJob.objects.filter(pk=job.pk).update(params=job.params, total=total)
        tracker.report(total=total, force=True)

    for chunk_ids in job_chunks(job):
        if all(pid in done or pid in skipped for pid in chunk_ids):
            continue
        tracker.check()
        chunk = list(Prompt.objects.filter(pk__in=chunk_ids).exclude(pk__in=skipped).order_by("pk"))
        found = {p.pk for p in chunk}
        # a prompt deleted after the job started (the admin allows it): left out and said, not dropped unsaid, the
        # job "succeeded" at 5 of 6 with nothing in its log
        left_out = {pid: deleted for pid in chunk_ids if pid not in found and pid not in skipped and pid not in done}
        unfit = backend.unfit([p.as_input for p in chunk], config.max_new_tokens)
        # one prompt too long for the model's context refused the whole batch, and failed the job
        left_out.update({chunk[i].pk: why for i, why in unfit.items()})
        if left_out:
            leave_out(left_out)
            chunk = [p for i, p in enumerate(chunk) if i not in unfit]
            if not chunk:
                continue
        seeds = [prompt_seed(config.seed, p.pk) for p in chunk]
        before = tracker.job.done
        stage = f"sampling prompts {before + 1}–{before + len(chunk)}"
        sampled = 1.0 - JUDGE_SHARE if job.params.get("pairing") == "judge" else 1.0  # the chunk's share sampling

        def on_tokens(used: int, budget: int, before: int = before, size: int = len(chunk), stage: str = stage,
                      sampled: float = sampled, total: int = total) -> None:
            tracker.report(progress=(before + size * sampled * used / max(budget, 1)) / total, stage=stage)

        def on_judged(prompts: int, before: int = before, size: int = len(chunk), sampled: float = sampled,
                      total: int = total) -> None:
            tracker.report(progress=(before + size * sampled + prompts * JUDGE_SHARE) / total)

        tracker.report(stage=stage, force=True)
        samples = backend.generate([p.as_input for p in chunk], config, seeds=seeds, should_stop=tracker.should_stop,
                                   on_tokens=on_tokens)
        tracker.check()  # asked to stop after the last token: the chunk is not stored either
        gone: list[int] = []  # deleted while the chunk was sampled: its answers are not stored
        made = _store_samples(job, chunk, seeds, samples, config, round_, judge, tracker, on_judged, gone=gone)
        if gone:
            leave_out(dict.fromkeys(gone, deleted))
        with transaction.atomic():
            job_row = GenerationJob.objects.select_for_update().get(pk=job.pk)
            job_row.done = Response.objects.filter(job=job).values("prompt_id").distinct().count()
            job_row.pairs_made += made
            job_row.save(update_fields=["done", "pairs_made"])
        tracker.report(done=job_row.done, progress=job_row.done / max(total, 1), force=True)
        if progress:
            progress(job_row.done, job_row.total)
    if skipped and not Response.objects.filter(job=job).exists():
        raise GenerationError(f"every prompt of the job was skipped ({len(skipped)}): deleted, or leaving no room "
                              f"for max_new_tokens {config.max_new_tokens} in the model's context; see the log")
    if job.params.get("pairing") != "none":  # no pairs made: no queue to ready
        _prepare_queue(job, round_, tracker)
    # the version's mean answer length takes in the job's answers before the job says it succeeded: stored after, a
    # reader of the finished job found the length without them
    update_mean_length(job.version)
    lifecycle.finish(job)


def _prepare_queue(job: GenerationJob, round_, tracker: Tracker) -> None:
    """The job's last step: its round's open pairs readied for the round's queue order (annotate.selection); a
    cancel meanwhile stops it (the margins scored before stay)."""
    tracker.report(stage="scoring the round's pairs for its queue order", force=True)
    try:
        # margins under the current version (the one people's labels will train next), normally the job's own; every
        # open pair of a round ordered by margin is scored (earlier jobs' too), a forward pass per answer, while the
        # bar stands at its end: the stage counts them
        prepared = prepare_queue(ModelVersion.objects.current() or job.version, rounds=[round_],
                                 cancelled=tracker.should_stop, progress=lambda done, total: tracker.report(
                                     stage=f"scoring the margins of the round's pairs for its queue order: {done} of "
                                           f"{total}"))
    except ScoringCancelled:
        raise JobCancelled("stopped while scoring the round's margins") from None
    if prepared.held_back or prepared.scored:
        lifecycle.append_log(job, f"round {round_.number}: {prepared.held_back} near-duplicate pairs held back, "
                                  f"{prepared.scored} margins scored under {prepared.version!r}")


def chunk_prompts(config: SamplingConfig) -> int:
    """Prompts per sampling call of a new job: CHUNK_ROWS rows of K samples, at least one prompt."""
    return max(1, CHUNK_ROWS // config.n)


def job_chunks(job: GenerationJob) -> list[list[int]]:
    """The job's sampling calls: fixed slices of its prompt list, whatever was sampled before a crash, so each
    prompt always shares its batch with the same prompts (a chunk is stored whole or not at all)."""
    ids, size = job.params["prompt_ids"], job.params.get("chunk_prompts", LEGACY_CHUNK_PROMPTS)
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def _job_dtype(job: GenerationJob) -> str:
    """The dtype the job samples in: the one it recorded when it first ran (so a resumed job keeps it, whatever the
    setting says now), else the product's, recorded now."""
    if "dtype" not in job.params:
        job.params["dtype"] = product_dtype()
        GenerationJob.objects.filter(pk=job.pk).update(params=job.params)
    return job.params["dtype"]


def _judge_scores(judge, path: str, prompt: Prompt, texts: list[str], cut: list[bool], seed: int,
                  tracker: Tracker | None = None) -> list[float]:
    """Round-robin wins of a prompt's samples by the judge; a sample cut at the token limit loses to a finished one
    unless the judge finds both bad (prefcore.outcomes.cut_rule), so the best is a finished sample whenever one is
    any good. A judge that
    fails names itself, the prompt and the samples (by index: nothing of the chunk is stored yet). A cancel is heard
    between judge calls."""
    shown = prompt_text(prompt.as_input)

    def compare(i: int, j: int) -> str:
        if tracker:
            tracker.check()
        return cut_rule(cut[i], cut[j], verdict(judge, path, shown, texts[i], texts[j],
                                                where=f"prompt {prompt.pk}, samples {i} and {j}"))

    return round_robin_scores(len(texts), compare, random.Random(seed))


def _store_samples(job, prompts, seeds, samples, config, round_, judge=None, tracker: Tracker | None = None,
                   on_judged: Callable[[int], None] | None = None, gone: list[int] | None = None) -> int:
    """Responses and pairs of one chunk, in one transaction; returns the number of pairs made. A prompt deleted while
    the chunk was sampled is left out, its id added to `gone` (its answers failed the whole chunk's transaction).

    A judge ranks the samples before the transaction opens, so no write lock is held while it thinks;
    `on_judged(prompts)` is told after each prompt it ranked, for the bar.
    """
    strategy = job.params.get("pairing", "random")
    judged = None
    if strategy == "judge":  # K(K-1)/2 calls a prompt, an LLM judge's seconds each: the stage says so
        judged = []
        for k, (prompt, seed, row) in enumerate(zip(prompts, seeds, samples, strict=True)):
            if tracker:
                tracker.report(stage=f"the judge ranks the samples of this chunk's prompt {k + 1} of {len(prompts)}")
            judged.append(_judge_scores(judge, job.params["judge"], prompt, [storable_text(x.text) for x in row],
                                        [x.finish_reason == "length" for x in row], seed, tracker))
            if on_judged:
                on_judged(k + 1)
        if tracker:
            tracker.check()
    made = 0
    with transaction.atomic():
        # the chunk's prompts that still exist, held so none is deleted before this commits (FOR NO KEY UPDATE
        # conflicts with a DELETE, not with the inserts that name them), taken in the one order every writer takes
        # prompts in: an import or a delete holding one while waiting on another deadlocked with this on PostgreSQL
        alive = set(in_lock_order(Prompt.objects.filter(pk__in=[p.pk for p in prompts]), "hash")
                    .values_list("pk", flat=True))
        for k, (prompt, seed, prompt_samples) in enumerate(zip(prompts, seeds, samples, strict=True)):
            if prompt.pk not in alive:
                if gone is not None:
                    gone.append(prompt.pk)
                continue
            rows = []
            for index, sample in enumerate(prompt_samples):
                try:
                    with transaction.atomic():
                        rows.append(Response.objects.create(
                            prompt=prompt, version=job.version, job=job, sample_index=index, text=storable_text(sample.text),
                            token_ids=list(sample.token_ids), token_count=len(sample.token_ids),
                            logp_sum=sample.logp_sum, finish_reason=sample.finish_reason,
                            sampling_params=dict(config.to_dict(), seed=seed), sampling_key=sampling_key(config, seed),
                        ))
                except IntegrityError:  # already stored by an earlier, interrupted attempt
                    rows.append(Response.objects.get(job=job, prompt=prompt, sample_index=index))
            if strategy == "none":
                continue
            chosen, scores = strategy, None
            if strategy == "best_worst":
                scores = [r.logp_sum / max(r.token_count, 1) for r in rows]
            elif strategy == "judge":
                # a judge that told no sample apart leaves a random pair
                chosen, scores = ("best_worst", judged[k]) if max(judged[k]) > min(judged[k]) else ("random", None)
            order = random.Random(f"{seed}:sides")
            for i, j in choose_pairs([r.text for r in rows], strategy=chosen, scores=scores, rng=random.Random(seed)):
                if chosen == "best_worst" and order.random() < 0.5:
                    # stored in an order that tells nothing: best first, a label's stored choice ("a", which the
                    # API answers a key press with) told a person the judge's pick, to agree with it on an undo
                    i, j = j, i
                _, created = Pair.objects.get_or_create(
                    response_a=rows[i], response_b=rows[j],
                    defaults={"prompt": prompt, "round": round_, "job": job, "labels_needed": round_.labels_per_pair},
                )
                made += created
    return made


def cancel_generation_job(job: GenerationJob) -> None:
    """Stop the job: at once if queued, within seconds if sampling (nothing of the chunk in flight is stored)."""
    lifecycle.cancel(job)


def update_mean_length(version: ModelVersion) -> None:
    mean = Response.objects.filter(version=version).aggregate(m=Avg("token_count"))["m"]
    ModelVersion.objects.filter(pk=version.pk).update(mean_response_tokens=mean)


# ---- answering prompts (compare, evaluate) --------------------------------------------------------------------


# Prompts answers_for found too long for a model's context, in this process: a later call (each loop round's
# evaluation of base, a resumed set) loaded the model again only to find them. Keyed by what decides it (the model as
# backend_for loads it, files included; the prompt as the model reads it; max_new_tokens), never by ids, which a
# database may give out again; at most UNFIT_KEPT of them (each a hash), then forgotten all at once.
_UNFIT: set[tuple[str, str, int]] = set()
UNFIT_KEPT = 10_000


def _unfit_key(model: str, prompt: Prompt, max_new_tokens: int) -> tuple[str, str, int]:
    content = hashlib.sha256(json.dumps(prompt.as_input, sort_keys=True).encode()).hexdigest()
    return model, content, max_new_tokens


def left_out(prompts: Iterable[Prompt], *answers: dict[int, Response]) -> list[Prompt]:
    """The prompts some of `answers` (answers_for's) have no answer to: too long for the model's context."""
    return [p for p in prompts if any(p.pk not in found for found in answers)]


def answers_for(
    version: ModelVersion, prompts: Iterable[Prompt], config: SamplingConfig | None = None, *, seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None,
    on_partial: Callable[[float, int], None] | None = None,
) -> dict[int, Response]:
    """One answer per prompt from `version`, with the per-prompt seed; answers stored before are reused. A prompt
    too long to leave room for max_new_tokens in the model's context gets none (no entry): one such prompt refused
    its whole batch, and failed the comparison or the round's measuring it was part of (callers say which were left
    out: left_out).

    `on_progress(answered, total)` after each stored batch, and before the first for the answers reused (when some
    are to be sampled); `on_partial(answered, total)` while a batch samples, with a fractional count (its tokens so
    far); `should_stop()` is asked per decode step: True raises GenerationCancelled, and nothing of the batch in
    flight is stored.
    """
    config = SamplingConfig.from_dict(dict((config or SamplingConfig()).to_dict(), n=1))
    prompts = list(prompts)
    answers: dict[int, Response] = {}
    missing, known_unfit = [], set()
    model = _model_key(version)
    for prompt in prompts:
        key = sampling_key(config, prompt_seed(seed, prompt.pk))
        found = Response.objects.filter(version=version, prompt=prompt, sampling_key=key).order_by("pk").first()
        if found:
            answers[prompt.pk] = found
        elif _unfit_key(model, prompt, config.max_new_tokens) in _UNFIT:
            known_unfit.add(prompt.pk)
        else:
            missing.append(prompt)
    prompts = [p for p in prompts if p.pk not in known_unfit]
    if missing:
        backend = backend_for(version)
        if unfit := backend.unfit([p.as_input for p in missing], config.max_new_tokens):
            if len(_UNFIT) > UNFIT_KEPT:
                _UNFIT.clear()
            _UNFIT.update(_unfit_key(model, missing[i], config.max_new_tokens) for i in unfit)
            missing = [p for i, p in enumerate(missing) if i not in unfit]
            kept = {p.pk for p in missing}
            prompts = [p for p in prompts if p.pk in answers or p.pk in kept]
        if on_progress and len(prompts) > len(missing):
            # the answers reused, counted before the first new batch samples (its tokens go on from them): counted
            # only with it, a set cancelled inside that batch said "0 answers kept for reuse" with them stored
            on_progress(len(prompts) - len(missing), len(prompts))
        for start in range(0, len(missing), config.batch_size):
            chunk = missing[start:start + config.batch_size]
            seeds = [prompt_seed(seed, p.pk) for p in chunk]
            before = len(prompts) - len(missing) + start

            def on_tokens(used: int, budget: int, before: int = before, size: int = len(chunk)) -> None:
                if on_partial:
                    on_partial(before + size * used / max(budget, 1), len(prompts))

            samples = backend.generate([p.as_input for p in chunk], config, seeds=seeds, should_stop=should_stop,
                                       on_tokens=on_tokens)
            if should_stop and should_stop():
                raise GenerationCancelled("answering stopped on request")
            with transaction.atomic():
                for prompt, s, (sample,) in zip(chunk, seeds, samples, strict=True):
                    answers[prompt.pk] = Response.objects.create(
                        prompt=prompt, version=version, text=storable_text(sample.text),
                        token_ids=list(sample.token_ids), token_count=len(sample.token_ids), logp_sum=sample.logp_sum,
                        finish_reason=sample.finish_reason, sampling_params=dict(config.to_dict(), seed=s),
                        sampling_key=sampling_key(config, s),
                    )
            if on_progress:
                on_progress(before + len(chunk), len(prompts))
    return answers
