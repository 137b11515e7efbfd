"""A job's stored judge name cannot make the worker import or call anything (issue 17, row 7).

The report: a superuser edited a queued job's params in the admin to name `subprocess:Popen?args=...&shell=1`, and
the worker ran it. Now judges come only from an allow-list (the built-in judges and PREFLOOP_JUDGES), checked
before anything is imported, wherever the name comes from; and the admin shows every job's params read-only.
"""
from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, ModelVersion, Prompt
from judges import BUILT_IN_JUDGES, JudgeError, load_judge
from loop import services as loop
from loop.models import LoopRun


def team_judge(prompt: str, first: str, second: str) -> str:
    """A team's own judge, allowed by listing it in PREFLOOP_JUDGES."""
    return "a"


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def attacks(marker) -> list[str]:
    return [
        f"subprocess:Popen?args=touch {marker}&shell=1",
        f"os:system?command=touch {marker}",
        f"os.system?command=touch {marker}",
        "canary_module:judge",  # a module whose import alone would leave the marker
    ]


@pytest.fixture
def canary_module(tmp_path, marker, monkeypatch):
    """An importable module that writes the marker when imported: proves the allow-list is checked first."""
    (tmp_path / "canary_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\ndef judge(p, a, b):\n    return 'a'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def version(db, tiny_model_dir):
    for k in range(2):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    return gen.register_version("base", tiny_model_dir)


def test_a_generation_job_whose_params_name_popen_fails_and_runs_nothing(version, marker, canary_module):
    config = SamplingConfig(n=2, max_new_tokens=4, seed=0)
    for attack in attacks(marker):
        job = gen.start_generation_job(version, n_prompts=2, config=config, pairing="judge",
                                       judge="judges.rules:longer_text", enqueue=False)
        # What the admin's params field allowed: the stored judge rewritten after the job was queued.
        GenerationJob.objects.filter(pk=job.pk).update(params=dict(job.params, judge=attack))
        with pytest.raises(JudgeError, match="is not allowed"):
            gen.run_generation_job(job.pk)
        job.refresh_from_db()
        assert job.status == GenerationJob.FAILED
        assert f"judge {attack!r} is not allowed" in job.error and "PREFLOOP_JUDGES" in job.error
        assert not marker.exists(), attack


def test_a_loop_run_whose_judge_names_os_system_fails_and_runs_nothing(db, marker, canary_module):
    for attack in attacks(marker):
        run = LoopRun.objects.create(rounds=1, pairs=1, judge=attack)
        run = loop.run_loop(run.pk)
        assert run.status == LoopRun.FAILED
        assert f"judge {attack!r} is not allowed: the judges are judges.rules:length_target" in run.error
        assert not marker.exists(), attack


@pytest.mark.parametrize("command, options", [
    ("label_pairs", {}),
    ("judge_votes", {}),
    ("run_loop", {"rounds": 1, "pairs": 1}),
    ("generate_pairs", {"prompts": 1, "samples": 2, "pairing": "judge"}),
])
def test_the_command_line_refuses_an_unlisted_judge_naming_the_allowed_ones(version, marker, canary_module, command,
                                                                             options):
    for attack in attacks(marker):
        with pytest.raises(CommandError) as err:
            call_command(command, judge=attack, **options)
        message = str(err.value)
        assert f"judge {attack!r} is not allowed" in message
        assert all(name in message for name in BUILT_IN_JUDGES) and "PREFLOOP_JUDGES" in message
        assert not marker.exists()


def test_a_judge_listed_in_settings_is_accepted_everywhere(db, settings, marker, canary_module, capsys):
    """A team adds its own judge by listing it; the command line then takes it (and still nothing else)."""
    from annotate.models import Pair
    from tests.annotate.factories import make_pair

    settings.PREFLOOP_JUDGES = ["tests.security.test_callables:team_judge"]
    assert load_judge("tests.security.test_callables:team_judge") is team_judge
    assert load_judge("tests.security.test_callables.team_judge") is team_judge  # the dotted spelling too
    make_pair(text_a="one", text_b="two")
    call_command("label_pairs", judge="tests.security.test_callables:team_judge")
    assert '"labels": 1' in capsys.readouterr().out and Pair.objects.get().labels_done == 1
    # Listing one callable of a module does not open the module.
    with pytest.raises(JudgeError, match="is not allowed"):
        load_judge("tests.security.test_callables:attacks")
    with pytest.raises(JudgeError, match=r"PREFLOOP_JUDGES: judge 'not a name'"):
        settings.PREFLOOP_JUDGES = ["not a name"]
        load_judge("judges.rules:length_target")
    assert not marker.exists()


# ---- the admin shows what a job runs, read-only ----------------------------------------------------------------

def _jobs(version, staff):
    """One queued job of each kind, made the way the pages make them."""
    from compare.models import CompareJob
    from training.models import TrainingRun

    generation = gen.start_generation_job(version, n_prompts=1, config=SamplingConfig(n=2), enqueue=False)
    compare = CompareJob.objects.create(version_a=version, version_b=version, prompt_ids=[1], params={"seed": 0})
    training = TrainingRun.objects.create(input_version=version, reference_version=version, params={"epochs": 1})
    loop_run = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", params={})
    return {"generation/generationjob": generation, "compare/comparejob": compare,
            "training/trainingrun": training, "loop/looprun": loop_run}


def test_the_four_job_admins_show_params_read_only(version, staff, marker):
    client = Client()
    client.force_login(staff)
    for path, job in _jobs(version, staff).items():
        url = f"/admin/{path}/{job.pk}/change/"
        page = client.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert 'name="params"' not in body and 'name="judge"' not in body, f"{url} has an editable params field"
        stored = type(job).objects.get(pk=job.pk).params
        attack = {"judge": f"subprocess:Popen?args=touch {marker}&shell=1", "pairing": "judge"}
        client.post(url, {"params": str(attack).replace("'", '"'), "judge": attack["judge"], "_save": "Save"})
        after = type(job).objects.get(pk=job.pk)
        assert after.params == stored, f"{url} changed the stored params"
        assert getattr(after, "judge", "") != attack["judge"]
    assert not marker.exists()
    assert ModelVersion.objects.count() == 1
