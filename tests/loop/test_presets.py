"""Named loop presets: a run records the preset and the settings resolved from it; its own settings win; an unknown
name is refused where it was typed (service, command, API) and nothing is stored."""
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from loop.models import LoopRun
from loop.presets import ALL, DEFAULT, PRESETS, QUICK, REPLAY
from loop.services import LoopError, run_loop, start_loop_run
from tests.annotate.factories import make_staff

from .test_run_loop import JUDGE, PARAMS


@pytest.fixture
def prompts(loop_base):
    loop_base[1](train=6, eval=2)


def test_a_run_records_its_preset_and_the_settings_it_stands_for(prompts):
    default = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
    assert default.params["preset"] == "default"
    assert (default.params["sampling"]["n"], default.params["pairing"], default.params["data"],
            default.params["reference"]) == (4, "judge", "new", "start")
    every = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="all")
    assert (every.params["preset"], every.params["sampling"]["n"], every.params["pairing"], every.params["data"],
            every.params["reference"]) == ("all", 4, "judge", "all", "base")
    quick = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="quick")
    assert quick.params["preset"] == "quick"
    assert (quick.params["sampling"]["n"], quick.params["pairing"], quick.params["data"]) == (2, "random", "new")
    replay = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="replay")
    assert (replay.params["sampling"]["n"], replay.params["pairing"], replay.params["data"]) == (4, "judge", "replay")
    assert replay.params["reference"] == "base"
    # quick trains as default does (its rounds' pairs against base stopped improving after round 1)
    assert (quick.params["data"], quick.params["reference"], quick.params["training"]) == (
        default.params["data"], default.params["reference"], default.params["training"])
    # the default's earlier name still works, and the run records the preset under its name now (once the run with
    # the same settings has ended: the same loop is not queued twice)
    with pytest.raises(LoopError, match=f"loop run {default.pk} with these settings is queued already"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="iterative")
    LoopRun.objects.filter(pk=default.pk).update(status="succeeded")
    iterative = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                               preset="iterative")
    assert iterative.params == default.params
    assert len({QUICK.params()["data"], ALL.params()["data"], REPLAY.params()["data"]}) == 3
    assert DEFAULT.params() != QUICK.params() and set(PRESETS) == {"default", "all", "quick", "replay", "spin"}


def test_a_runs_own_settings_override_its_preset(prompts):
    run = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="quick",
                         params={"sampling": {"n": 3, "max_new_tokens": 8}, "data": "all"})
    assert run.params["sampling"] == {"n": 3, "max_new_tokens": 8} and run.params["data"] == "all"
    assert run.params["pairing"] == "random", "what the run did not name comes from its preset"


def test_the_default_presets_training_settings_are_recorded_and_overridden_one_by_one(prompts):
    """The default preset trains with an NLL term on the chosen answers (RPO, measurement 19 of docs/defaults.md); a
    run's own training settings replace the preset's one by one, so a run that sets beta keeps the NLL term, and one
    that sets rpo_alpha to 0 trains plain DPO."""
    default = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
    assert default.params["training"] == {"rpo_alpha": 1.0} == DEFAULT.params()["training"]
    beta = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                          params={"training": {"beta": 0.2}})
    assert beta.params["training"] == {"rpo_alpha": 1.0, "beta": 0.2}
    plain = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                           params={"training": {"rpo_alpha": 0}})
    assert plain.params["training"] == {"rpo_alpha": 0}
    # a preset that sets no training leaves the run's settings as given, and none when none are given
    assert "training" not in start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                                            preset="all").params


def test_the_quick_preset_runs_a_round_with_its_settings(prompts):
    from generation.models import GenerationJob
    from training.models import TrainingRun

    params = dict(PARAMS, sampling=dict(PARAMS["sampling"]))
    run = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, params=params, enqueue=False,
                         preset="quick")
    run = run_loop(run.pk)
    assert run.status == "succeeded", run.error
    job = GenerationJob.objects.get()
    assert job.params["pairing"] == "random" and job.params["sampling"]["n"] == 2
    assert TrainingRun.objects.get().data_choice == "new"


def test_the_default_preset_trains_each_round_on_its_own_pairs_against_its_starting_version(prompts, client,
                                                                                             django_user_model):
    from training.models import TrainingRun

    params = dict(PARAMS, sampling=dict(PARAMS["sampling"]))
    run = start_loop_run(rounds=2, pairs=2, judge=JUDGE, tag="t", eval_limit=2, params=params, enqueue=False)
    run = run_loop(run.pk)
    assert run.status == "succeeded", run.error
    first, second = TrainingRun.objects.order_by("pk")
    assert (first.data_choice, first.reference_choice) == (second.data_choice, second.reference_choice) == ("new", "start")
    # round 2 starts from whatever the gate left current after round 1, and that version is its reference
    assert second.reference_version == second.input_version
    assert first.reference_version == first.input_version and first.input_version.parent is None
    # the preset's NLL term reaches each round's training beside the run's own settings
    assert first.params["rpo_alpha"] == second.params["rpo_alpha"] == 1.0 and first.params["epochs"] == 1
    client.force_login(django_user_model.objects.create_user("boss", password="pw-boss-123", is_staff=True))
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert "against the version each round starts from as the reference" in page
    # by name, whatever order the database keeps the settings in (PostgreSQL's jsonb sorts keys by length)
    assert ("training settings over the defaults: <code>batch_size</code> 4, <code>epochs</code> 1, "
            "<code>learning_rate</code> 0.001, <code>max_length</code> 128, <code>max_prompt_length</code> 64, "
            "<code>rpo_alpha</code> 1.0, <code>warmup_ratio</code> 0.0.") in page


def test_an_unknown_preset_is_refused_naming_the_known_ones(prompts, client, django_user_model):
    with pytest.raises(LoopError, match=r"unknown loop preset 'fast' \(known: default, all, quick, replay, spin\)"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="fast")
    with pytest.raises(LoopError, match="unknown loop preset 'fast'"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                       params={"preset": "fast"})
    with pytest.raises(CommandError, match="run_loop: unknown loop preset 'fast'"):
        call_command("run_loop", rounds=1, pairs=2, judge=JUDGE, preset="fast")
    staff = make_staff("boss", "loop.add_looprun", "generation.change_modelversion")
    client.force_login(staff)
    response = client.post("/api/v1/jobs/loop", json.dumps({"rounds": 1, "pairs": 2, "judge": JUDGE, "tag": "t",
                                                              "eval_limit": 2, "preset": "fast"}),
                           content_type="application/json")
    assert response.status_code == 400 and "unknown loop preset 'fast'" in response.content.decode()
    assert not LoopRun.objects.exists()


def test_the_run_page_names_the_preset_and_what_it_set(prompts, client, django_user_model):
    run = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="quick")
    client.force_login(django_user_model.objects.create_user("boss", password="pw-boss-123", is_staff=True))
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert '<strong class="preset">quick</strong>' in page
    assert "2 answers a prompt, random pairing, trained on\n  its starting version's labelling round" in page
    assert "against the version each round starts from as the reference" in page


def test_a_preset_given_twice_differently_is_refused_not_one_dropped(prompts):
    """`preset="quick"` with `params={"preset": "all"}` ran "all" without a word."""
    with pytest.raises(LoopError, match="preset 'quick' and the settings' own preset 'all': give one of them"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="quick",
                       params={"preset": "all"})
    assert not LoopRun.objects.exists()
    # an explicit "default" is a preset given, not "none given": it ran the settings' "all" without a word
    with pytest.raises(LoopError, match="preset 'default' and the settings' own preset 'all': give one of them"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="default",
                       params={"preset": "all"})
    assert not LoopRun.objects.exists()
    run = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, params={"preset": "all"})
    assert run.params["preset"] == "all"  # given once, in the settings: as before
    # one preset by two of its names is given once
    same = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, preset="iterative",
                          params={"preset": "default"})
    assert same.params["preset"] == "default"


def test_a_preset_in_the_settings_alone_is_the_runs_from_the_command_and_the_api(prompts, client, staff):
    call_command("run_loop", rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, params='{"preset": "quick"}',
                 stdout=open("/dev/null", "w"))
    assert LoopRun.objects.get().params["preset"] == "quick"
    LoopRun.objects.update(status="succeeded")
    client.force_login(staff)
    answer = client.post("/api/v1/jobs/loop", {"rounds": 1, "pairs": 2, "judge": JUDGE, "tag": "t", "eval_limit": 2,
                                           "params": {"preset": "replay"}}, content_type="application/json")
    assert answer.status_code == 201, answer.content
    assert LoopRun.objects.latest("pk").params["preset"] == "replay"


def test_a_loop_sampling_greedily_is_refused_at_its_start(prompts):
    """Temperature 0 gives a prompt's samples as one answer: the loop was accepted, then its round's generation made
    no pair. Refused when it is started, as a generation job is."""
    with pytest.raises(LoopError, match="temperature 0 samples greedily"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                       params={"sampling": {"temperature": 0}})
    assert not LoopRun.objects.exists()


def test_the_same_loop_with_its_judge_spelled_another_way_is_the_same_run(prompts):
    """The twin check compared the judge as typed: the dotted spelling of the same judge queued the loop twice."""
    first = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
    module, _, attr = JUDGE.partition(":")
    with pytest.raises(LoopError, match=f"loop run {first.pk} with these settings is queued already"):
        start_loop_run(rounds=1, pairs=2, judge=f" {module}.{attr} ", tag="t", eval_limit=2, enqueue=False,
                       eval_judge=f"{module}.{attr}")
    assert LoopRun.objects.count() == 1 and first.judge == first.params["eval_judge"] == JUDGE


def test_the_same_loop_with_a_default_spelt_out_is_the_same_run_and_a_changed_setting_is_another(prompts):
    """The twin check compared the stored settings literally: the same loop sent again with sampling's default
    temperature, or training's default beta, spelt out started a second run (the API answered 201, not 409)."""
    from generation.backends.base import SamplingConfig
    from training.dpo.config import DPOConfig

    first = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
    spelt_out = ({"sampling": {"temperature": SamplingConfig.from_dict(first.params.get("sampling") or {}).temperature}},
                 {"training": {"beta": DPOConfig.from_dict(first.params.get("training") or {}).beta}},
                 {"pairing": first.params.get("pairing", DEFAULT.pairing)})
    for params in spelt_out:
        with pytest.raises(LoopError, match=f"loop run {first.pk} with these settings is queued already"):
            start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, params=params)
    assert LoopRun.objects.count() == 1
    other = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False,
                           params={"sampling": {"temperature": 0.7}})
    assert other.pk != first.pk and LoopRun.objects.count() == 2


def test_a_loop_is_refused_at_its_start_when_the_current_versions_labelling_round_has_closed(prompts):
    """Its first round's pairs would go into that round, where no one is given them: the run was queued and failed
    after loading its judge. Samples only (the spin preset) make no pair and are allowed."""
    from django.utils import timezone

    from annotate.models import LabellingRound

    LabellingRound.objects.create(number=1, closed_at=timezone.now(), closed_reason="labelled enough")
    with pytest.raises(LoopError, match="labelling round 1, where pairs sampled from version 'base' go, has closed "
                                        r"\(labelled enough\)"):
        start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
    assert not LoopRun.objects.exists()


def test_a_blank_eval_judge_is_none_given(prompts):
    """`--eval-judge " "` was stripped to nothing after the check for one given, and refused as a bad --judge."""
    for given in ({"eval_judge": " "}, {"params": {"eval_judge": "  "}}):
        run = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False, **given)
        assert run.params["eval_judge"] == JUDGE
        run.delete()
