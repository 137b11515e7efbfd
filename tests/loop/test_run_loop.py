"""run_loop end to end on the tiny model with a rule judge; reference log-probs are computed once per response."""
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Label
from compare.models import Vote
from generation import services as gen
from generation.models import ModelVersion
from loop.models import LoopRun
from loop.services import run_loop, start_loop_run
from training.models import ReferenceLogp

# Always decides on the tiny model's random text (a rule that rejects cut-off answers would call most pairs
# "both bad", and which prompts a round draws depends on the database's ids).
JUDGE = "judges.rules:longer_text"
PARAMS = {
    "training": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "max_prompt_length": 64,
                 "warmup_ratio": 0.0},
    "sampling": {"max_new_tokens": 10, "temperature": 1.0, "top_p": 1.0},
}
KEYS = {"round", "version", "pairs", "labels", "train_loss", "reward_accuracy", "kl_to_base", "mean_response_tokens",
        "win_rate_vs_base", "ci95", "seconds"}


@pytest.fixture
def tiny_loop(loop_base):
    base, make = loop_base
    make(train=12, eval=3)
    return base


def _open_gate(settings) -> None:
    """A gate every round passes (any win rate, length or drift): the rounds chain round-1 → round-2."""
    settings.PREFLOOP_GATE_MIN_VOTES, settings.PREFLOOP_GATE_MIN_WIN_RATE = 1, 0.0
    settings.PREFLOOP_GATE_MIN_LOWER_BOUND, settings.PREFLOOP_GATE_MAX_LENGTH_GROWTH = 0.0, 1e9
    settings.PREFLOOP_GATE_MAX_CUT_SHARE_GROWTH, settings.PREFLOOP_GATE_MAX_KL_PER_TOKEN = 1e9, 1e9  # no drift budget
    settings.PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN = 1e9


def test_run_loop_two_rounds_end_to_end(tiny_loop, capsys, monkeypatch, settings):
    import training.dpo.trainer as trainer
    import training.services as training_services

    # Count reference log-probs computed while training (measuring the round and the KL check score answers apart).
    computed, in_training = [], {"on": False}
    real_ref, real_run = trainer._reference_logps_for, training_services._train

    def counting_ref(scorer, rows, indices, *args, **kwargs):
        if in_training["on"]:
            computed.append(len(indices))
        return real_ref(scorer, rows, indices, *args, **kwargs)

    def flagged_run(*args, **kwargs):
        in_training["on"] = True
        try:
            return real_run(*args, **kwargs)
        finally:
            in_training["on"] = False

    monkeypatch.setattr(trainer, "_reference_logps_for", counting_ref)
    monkeypatch.setattr(training_services, "_train", flagged_run)
    _open_gate(settings)

    call_command("run_loop", rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, seed=1, preset="all",
                 params=json.dumps(PARAMS))
    out = capsys.readouterr()
    rounds = [json.loads(line) for line in out.out.strip().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and [r["version"] for r in rounds] == ["round-1", "round-2"]
    for r in rounds:
        assert KEYS <= set(r)
        assert r["pairs"] == 4 and r["labels"] >= 4
        assert 0 <= r["win_rate_vs_base"] <= 1 and r["ci95"][0] <= r["win_rate_vs_base"] <= r["ci95"][1]
        assert r["kl_to_base"] is not None and r["mean_response_tokens"] > 0
        assert set(r["seconds"]) == {"generate", "label", "train", "evaluate"}
        assert r["gate"]["decision"] == "promoted" and r["current"] == r["version"]
        assert 0 <= r["truncated_answers"] <= 3 and 0 <= r["base_truncated_answers"] <= 3
    assert rounds[0]["gate"]["against"] == "base" and rounds[1]["gate"]["against"] == "round-1"
    assert "round 1: promoted round-1" in out.err and "round 2: promoted round-2" in out.err
    assert "round 2/2" in out.err  # the progress bar
    assert out.err.rstrip().splitlines()[-1].startswith("round 2/2 done: 100%")  # it ended at 80-93% with rc 0

    current = gen.current_version()
    assert current.name == "round-2" and current.parent.name == "round-1"
    assert Label.objects.filter(is_automatic=False).count() == 0
    # Round 1 is judged against base (the current version: one evaluation serves both); round 2 against base and,
    # for its gate, against round-1.
    assert Vote.objects.filter(is_automatic=True, judge=JUDGE).count() == 3 * 3
    run = LoopRun.objects.get()
    assert run.status == "succeeded" and run.results == rounds and run.progress == 1.0
    # Round 2 trains on all decided pairs so far with the base as reference: only the new ones were scored.
    base = ModelVersion.objects.get(name="base")
    from training.models import TrainingRun

    run_1, run_2 = TrainingRun.objects.order_by("pk")
    assert run_2.reference_version == base and run_2.pairs > run_1.pairs > 0
    # (round 1's 4 pairs are its first step's batch of 4, with the base as their reference: that step's own forward
    # gave their reference log-probs, and no pass ran; they were stored all the same)
    assert run_1.pairs == 4 and computed == [run_2.pairs - run_1.pairs]
    assert ReferenceLogp.objects.filter(reference=base).count() == 2 * run_2.pairs
    assert run_1.data_choice == run_2.data_choice == "all"


def test_a_failing_judge_stops_the_run_with_a_clear_error(tiny_loop):
    from tests.loop import judges_for_tests

    judges_for_tests.CALLS["n"] = 0
    # a random pair of two samples: the judge first meets the pairs when labelling
    params = dict(PARAMS, pairing="random", sampling=dict(PARAMS["sampling"], n=2))
    run = start_loop_run(rounds=1, pairs=4, judge="tests.loop.judges_for_tests:fails_on_third", tag="t",
                         eval_limit=3, params=params, enqueue=False)
    run = run_loop(run.pk)
    assert run.status == "failed" and run.results == []
    assert "judge 'tests.loop.judges_for_tests:fails_on_third' on pair" in run.error
    assert "ConnectionError: judge service unreachable" in run.error
    # labels stored before it stay: the judge's two answers (every pair is put to the judge, a cut answer too)
    assert Label.objects.count() == 2 and judges_for_tests.CALLS["n"] == 3
    assert gen.current_version().name == "base"


def test_a_round_pairs_the_judges_best_and_worst_of_k_samples(tiny_loop):
    from annotate.models import Pair
    from generation.models import GenerationJob, Response

    # the round's K must not clash with what evaluation sets itself (one answer)
    params = dict(PARAMS, sampling=dict(PARAMS["sampling"], n=3))
    run = start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=params, enqueue=False)
    assert run.params["pairing"] == "judge"  # the default, recorded with the run
    run = run_loop(run.pk)
    assert run.status == "succeeded", run.error
    job = GenerationJob.objects.get()
    assert job.params["pairing"] == "judge" and job.params["judge"] == JUDGE and job.params["sampling"]["n"] == 3
    for pair in Pair.objects.filter(job=job):
        samples = list(Response.objects.filter(job=job, prompt=pair.prompt))
        assert len(samples) == 3
        # the judge prefers the longer answer, and an answer cut at the token limit loses to a finished one whatever
        # its length (prefcore.outcomes.cut_rule): the best sample is the longest finished one, the worst the
        # shortest cut one
        rank = {r.pk: (r.finish_reason != "length", len(r.text.strip())) for r in samples}
        # (stored on either side: generation.services draws the sides, so a stored choice tells no one the judge's pick)
        assert sorted([rank[pair.response_a_id], rank[pair.response_b_id]]) == [min(rank.values()), max(rank.values())]
    assert run.results[0]["votes"]["n"] == 3


def test_bad_settings_are_refused_before_anything_runs(tiny_loop):
    with pytest.raises(CommandError, match="run_loop: judge 'judges.rules:nothing'"):
        call_command("run_loop", rounds=1, pairs=4, judge="judges.rules:nothing")
    with pytest.raises(CommandError, match="no prompts in the train split with tag 'other'"):
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, tag="other")
    with pytest.raises(CommandError, match=r"training settings: DPOConfig.learning_rate=-1.0: must be more than 0 and at most 0.01"):
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, params='{"training": {"learning_rate": -1}}')
    with pytest.raises(CommandError, match=r"data must be one of 'all', 'new', 'replay', 'spin' \(got 'latest'\)"):
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, params='{"data": "latest"}')
    with pytest.raises(CommandError, match=r"sampling.seed: each round draws its seed from the run's seed"):
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, params='{"sampling": {"seed": 3}}')
    with pytest.raises(CommandError, match=r"pairing must be one of random, most_different, best_worst, judge"):
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, params='{"pairing": "cheapest"}')
    assert not LoopRun.objects.exists()


def test_a_round_that_does_not_pass_the_gate_stays_a_candidate(tiny_loop, capsys):
    """The product's gate wants 16 blind votes; 3 eval prompts give 3: each round is kept out, says why, and the
    next round starts again from the version that stayed current."""
    call_command("run_loop", rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, seed=1,
                 params=json.dumps(PARAMS))
    out = capsys.readouterr()
    rounds = [json.loads(line) for line in out.out.strip().splitlines()]
    assert [r["gate"]["decision"] for r in rounds] == ["kept", "kept"]
    assert [r["current"] for r in rounds] == ["base", "base"]
    assert rounds[0]["gate"]["reason"] == "needs 16 blind votes against the current version, has 3"
    assert "round 1: kept base (round-1 stays a candidate): needs 16 blind votes" in out.err
    assert gen.current_version().name == "base"
    from training.models import TrainingRun

    runs = list(TrainingRun.objects.order_by("pk"))
    assert [r.input_version.name for r in runs] == ["base", "base"]
    assert [r.decision for r in runs] == ["kept", "kept"] and all(r.gate["passed"] is False for r in runs)
    assert not ModelVersion.objects.get(name=runs[0].output_version.name).is_current
    assert "kept base (round-1 stays a candidate)" in LoopRun.objects.get().log


def test_each_round_writes_its_win_rates_to_tensorboard_one_point_per_round(tiny_loop, settings, tmp_path):
    from tests.training.test_tensorboard import read_events
    from training.models import TrainingRun

    settings.PREFLOOP_TENSORBOARD, settings.TENSORBOARD_DIR = True, tmp_path / "tensorboard"
    _open_gate(settings)
    run = run_loop(start_loop_run(rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS,
                                  enqueue=False).pk)
    assert run.status == "succeeded", run.error
    points: dict[int, dict] = {}
    for path in sorted((tmp_path / "tensorboard" / "rounds").glob("events.out.tfevents.*")):
        for event in read_events(path):
            points.setdefault(event["step"], {}).update(event.get("scalars", {}))
    assert sorted(k for k in points if k) == [1, 2], "step: the version's round"
    for result in run.results:
        point = points[result["round"]]  # round N of a loop that started from base trains version round N
        assert point["eval/win_rate_vs_base"] == pytest.approx(result["win_rate_vs_base"], abs=1e-4)
        assert point["gate/win_rate_vs_current"] == pytest.approx(result["gate"]["win_rate"], abs=1e-4)
        assert point["gate/promoted"] == 1.0 and point["eval/votes"] == result["votes"]["n"]
    # and each run's own folder has its verdicts at its last step, beside its curves
    training = TrainingRun.objects.get(output_version__round=1)
    own = [e for p in (tmp_path / "tensorboard" / f"run-{training.pk}").glob("events.*") for e in read_events(p)
           if "eval/win_rate_vs_base" in e.get("scalars", {})]
    assert [e["step"] for e in own] == [training.total]


def test_a_rounds_gate_figures_are_the_ones_its_decision_read(tiny_loop, monkeypatch):
    """The round's evaluation set is listed for people to vote on as soon as it is stored; a person's vote before
    the gate is checked counts in the decision, and the round's result reported the judge's figures instead."""
    import loop.services as loop_services
    from compare.models import CompareJob
    from compare.services import record_vote
    from tests.annotate.factories import make_user

    real_kl = loop_services.mean_kl

    def a_person_votes_first(*args, **kwargs):  # between the evaluation and the gate: while the KL is measured
        comparison = CompareJob.objects.order_by("pk").last().comparisons.order_by("pk").first()
        record_vote(comparison, make_user(), "tie")
        return real_kl(*args, **kwargs)

    monkeypatch.setattr(loop_services, "mean_kl", a_person_votes_first)
    run = run_loop(start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS,
                                  enqueue=False).pk)
    assert run.status == "succeeded", run.error
    (result,) = run.results
    from training.models import TrainingRun

    decided_on = TrainingRun.objects.get(output_version__name=result["version"]).gate["evidence"]
    assert result["gate"]["votes"] == decided_on["votes"] == 4  # the judge's 3 and the person's
    assert result["gate"]["pairs"] == decided_on["n"] == 3  # on the judge's 3 pairs of answers
    assert result["gate"]["win_rate"] == decided_on["win_rate"] and result["gate"]["ci95"] == decided_on["ci95"]
    # the person voted on one of the judge's 3 pairs of answers: 4 votes, 3 pairs (GateEvidence.pairs)
    assert result["gate"]["reason"] == ("needs 16 blind votes against the current version, has 3 pairs of answers "
                                        "voted on (4 votes; several voters on the same two answers count once)")


def test_a_run_cancelled_from_the_page_ends_the_command_saying_what_was_kept(tiny_loop, monkeypatch):
    """The command said "run_loop: run 9 cancelled: " with nothing after the colon: a cancel has no error, and the
    run's stage, which says what was kept, was not shown."""
    from jobs import lifecycle
    from loop.management.commands import run_loop as command

    def cancelled_from_the_page(pk, **kwargs):
        lifecycle.cancel(LoopRun.objects.get(pk=pk))  # as the page's Cancel button, while the run starts
        return run_loop(pk, **kwargs)

    monkeypatch.setattr(command, "run_loop", cancelled_from_the_page)
    with pytest.raises(CommandError, match=r"^run_loop: run \d+ cancelled: \S.+") as ended:
        call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, seed=1)
    assert str(ended.value).endswith(LoopRun.objects.get().stage)


def test_the_loops_judge_labels_its_rounds_pairs_and_leaves_peoples_queue_alone(tiny_loop):
    """A round reported "pairs": 1, "labels": 7: its judge labelled every open pair in the queue, the 6 queued for
    people by a generation job of theirs too, and the round trained on them."""
    from annotate.models import Pair
    from tests.annotate.factories import make_pair

    peoples = [make_pair() for _ in range(6)]
    run = run_loop(start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS,
                                  enqueue=False, preset="quick").pk)
    assert run.status == "succeeded", run.error
    (result,) = run.results
    assert result["labels"] == result["pairs"] <= 2
    assert not Label.objects.filter(pair__in=peoples).exists()  # still people's to label
    assert Pair.objects.filter(pk__in=[p.pk for p in peoples], labels_done=0).count() == 6


def test_a_rounds_length_warning_compares_it_with_the_version_it_started_from():
    """After a round whose candidate the gate kept back, the next round starts from the version before it; its
    length warning compared it with the kept-back candidate's figures."""
    from loop.services import started_from

    results = [{"round": 1, "version": "round-1", "current": "round-1", "mean_response_tokens": 80},
               {"round": 2, "version": "round-2", "current": "round-1", "mean_response_tokens": 30}]
    assert started_from(results, "round-1")["round"] == 1
    assert started_from(results, "base") is None  # base's own answers, measured in the round
