"""run_loop's self-play preset: each round samples the tagged prompts, trains their reference answers over those
samples with the starting version as the reference, and reads no label; the judge only evaluates."""
import pytest

from annotate.models import Label, Pair
from generation.models import Prompt, Response
from loop.services import LoopError, run_loop, start_loop_run
from training.models import TrainingRun

from .test_run_loop import JUDGE, PARAMS, _open_gate


def test_a_spin_loop_trains_on_reference_answers_and_labels_nothing(loop_base, settings):
    base, make = loop_base
    make(train=4, eval=3)
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    _open_gate(settings)

    # without reference answers it is refused before anything runs, saying what to import
    with pytest.raises(LoopError, match="no prompt in the train split with tag 't' has a reference answer"):
        start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS, enqueue=False,
                       preset="spin")
    for prompt in Prompt.objects.filter(tag="t"):
        Response.objects.create(prompt=prompt, text=f"A careful answer to: {prompt.text}", is_reference=True)
    for k in range(4):  # prompts of the tag without a reference answer: a self-play round never samples them
        Prompt.objects.create(text=f"Unanswerable {k}?", split="train", tag="t")
    # settings a self-play loop cannot run with are refused before anything runs, not in round 2
    for params, why in (({"reference": "base"}, "reference must be 'start'"),
                        ({"pairing": "random"}, "pairing must be 'none'")):
        with pytest.raises(LoopError, match=why):
            start_loop_run(rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params={**PARAMS, **params},
                           enqueue=False, preset="spin")
    with pytest.raises(LoopError, match="only data 'spin' trains without pairs"):
        start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params={**PARAMS, "pairing": "none"},
                       enqueue=False)

    run = start_loop_run(rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS, enqueue=False,
                         preset="spin")
    assert run.params["data"] == "spin" and run.params["reference"] == "start"
    run = run_loop(run.pk)
    assert run.status == "succeeded", run.error
    assert not Label.objects.exists()  # no judge labelled a pair: self-play reads none
    assert not Pair.objects.exists()  # and none was left in the queue for people
    assert not Response.objects.filter(prompt__text__startswith="Unanswerable", version__isnull=False).exists()
    assert [r["labels"] for r in run.results] == [0, 0]
    trainings = list(TrainingRun.objects.filter(part_of=run.key).order_by("pk"))
    assert [t.data_choice for t in trainings] == ["spin", "spin"]
    # round 2 starts from round 1's version and trains against that version's own answers, with it as the reference
    assert trainings[1].input_version == trainings[1].reference_version == trainings[0].output_version
    for training, result in zip(trainings, run.results, strict=True):
        own = Response.objects.filter(version=training.input_version, prompt__split="train").count()
        assert training.pairs == own == 4 * 2 == result["pairs"]  # the round's figure is the pairs it trained
    assert all(r["win_rate_vs_base"] is not None for r in run.results)
