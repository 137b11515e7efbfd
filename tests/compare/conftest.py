"""Factories for the compare tests: versions, prompts, answers and comparisons as plain rows."""
import itertools

import pytest

from compare.models import CompareJob, Comparison
from generation.models import ModelVersion, Prompt, Response
from training.models import TrainingRun

_counter = itertools.count()


def make_version(name: str, parent: ModelVersion | None = None, **fields) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, parent=parent, round=(parent.round + 1) if parent else 0, path=f"/tmp/{name}", **fields
    )


def make_prompt(text: str | None = None, split: str = Prompt.EVAL) -> Prompt:
    return Prompt.objects.create(text=text or f"prompt number {next(_counter)}", split=split)


def make_response(prompt: Prompt, version: ModelVersion, text: str = "", tokens: int = 10) -> Response:
    return Response.objects.create(prompt=prompt, version=version, text=text or f"answer {next(_counter)}",
                                   token_count=tokens)


def make_comparison(version_a, version_b, *, job=None, left_is_a=True, text_a="", text_b="", tokens=(10, 10)):
    prompt = make_prompt()
    return Comparison.objects.create(
        job=job, prompt=prompt, left_is_a=left_is_a,
        response_a=make_response(prompt, version_a, text_a, tokens[0]),
        response_b=make_response(prompt, version_b, text_b, tokens[1]),
    )


def make_job(version_a, version_b, *, n=2, blind=True, left_is_a=(True, False)) -> CompareJob:
    job = CompareJob.objects.create(version_a=version_a, version_b=version_b, blind=blind, total=2 * n,
                                    done=2 * n, status=CompareJob.SUCCEEDED)
    for k in range(n):
        make_comparison(version_a, version_b, job=job, left_is_a=left_is_a[k % len(left_is_a)],
                        text_a=f"answer of A number {k}", text_b=f"answer of B number {k}")
    job.prompt_ids = list(job.comparisons.values_list("prompt_id", flat=True))
    job.save()
    return job


@pytest.fixture
def versions(db):
    """Two versions with names that appear nowhere else on a page."""
    base = make_version("zebrafinch-base")
    child = make_version("okapi-round-one", parent=base, is_current=True)
    return base, child


@pytest.fixture
def candidate(db):
    """(base, round-1, its run): base is current; round-1 is a finished round's candidate, not yet checked."""
    base = make_version("base", is_current=True)
    new = make_version("round-1", parent=base)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=new,
                                     status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    return base, new, run
