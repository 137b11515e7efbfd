"""SPIN (self-play): prompts imported with a reference answer; a round trains each reference over the starting
version's own answers to the same prompt, with no labels, and is measured on held-out prompts like any round."""
from __future__ import annotations

import json

import pytest

from annotate.importers import ImportProblem, import_prompts
from annotate.models import LabellingRound
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion, Prompt, Response
from prefcore.rows import read_prompts
from training import services as train
from training.dataset import is_heldout, spin_data
from training.models import ReferenceLogp, TrainingRun

FAST_TRAINING = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 96, "max_prompt_length": 48,
                 "warmup_ratio": 0.0}


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_a_prompt_file_reads_a_reference_answer_from_reference_or_completion(tmp_path):
    rows = read_prompts(_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Name a colour."},
        {"prompt": "Name a fruit.", "reference": "An apple."},
        {"prompt": [{"role": "user", "content": "Name a tree."}],
         "completion": [{"role": "assistant", "content": "An oak."}]},
    ]))
    assert [r.reference for r in rows] == [None, "An apple.", "An oak."]

    (tmp_path / "p.csv").write_text('prompt,reference\nName a colour.,\n"Name a fruit.","A pear."\n', encoding="utf-8")
    assert [r.reference for r in read_prompts(tmp_path / "p.csv")] == [None, "A pear."]  # an empty cell: none
    # TRL's unpaired format: a desirable completion is a reference answer
    kto = read_prompts(_jsonl(tmp_path / "k.jsonl", [{"prompt": "Q", "completion": "Good.", "label": True},
                                                      {"prompt": "Q2", "reference": "Fine.", "label": 1},
                                                      {"prompt": "Q3", "reference": "Sums.", "label": "math"}]))
    assert [r.reference for r in kto] == ["Good.", "Fine.", "Sums."]  # a label that is not false marks nothing


@pytest.mark.parametrize("row, field, why", [
    ({"prompt": "Q", "reference": "A", "completion": "B"}, "completion", "not both"),
    ({"prompt": "Q", "reference": "  "}, "reference", "empty"),
    ({"prompt": "Q", "completion": [{"role": "user", "content": "A"}]}, "completion", "assistant"),
    ({"prompt": "Q", "reference": 3}, "reference", "expected text"),
    # TRL's unpaired (KTO) format: an undesirable completion is never taken as a reference answer
    ({"prompt": "Q", "completion": "a harmful answer", "label": False}, "label", "undesirable"),
    ({"prompt": "Q", "completion": "a harmful answer", "label": "false"}, "label", "undesirable"),
])
def test_a_bad_reference_answer_is_refused_by_line_and_field(tmp_path, row, field, why):
    with pytest.raises(ImportProblem) as err:
        read_prompts(_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, row]))
    (problem,) = err.value.problems
    assert problem.startswith(f"p.jsonl: line 2: field '{field}': ") and why in problem


@pytest.mark.django_db
def test_importing_references_stores_each_answer_once_and_counts_rows_that_added_something(tmp_path):
    first = import_prompts(_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "Name a fruit.", "reference": "An apple."},
        {"prompt": "Name a fruit.", "reference": "An apple."},  # the same row again: nothing new
        {"prompt": "Name a colour."},
    ]))
    assert (first.created, first.skipped) == (2, 1)
    fruit = Prompt.objects.get(text="Name a fruit.")
    assert list(fruit.responses.values_list("text", "is_reference", "version")) == [("An apple.", True, None)]

    again = import_prompts(_jsonl(tmp_path / "b.jsonl", [
        {"prompt": "Name a fruit.", "reference": "An apple."},  # stored already
        {"prompt": "Name a fruit.", "completion": "A pear."},  # a second reference for a stored prompt: added
        {"prompt": "Name a colour.", "reference": "Blue."},  # a reference for a prompt stored without one: added
    ]))
    assert (again.created, again.skipped) == (2, 1)
    assert sorted(Response.objects.filter(is_reference=True).values_list("prompt__text", "text")) == [
        ("Name a colour.", "Blue."), ("Name a fruit.", "A pear."), ("Name a fruit.", "An apple.")]
    assert Prompt.objects.count() == 2

    # one bad row stores nothing, not even the good rows' references
    with pytest.raises(ImportProblem):
        import_prompts(_jsonl(tmp_path / "c.jsonl", [{"prompt": "Name a bird.", "reference": "A crow."},
                                                     {"prompt": "Name a fish.", "reference": ""}]))
    assert not Prompt.objects.filter(text="Name a bird.").exists()
    assert Response.objects.filter(is_reference=True).count() == 3


@pytest.fixture
def tiny_base(db, tiny_model_dir) -> ModelVersion:
    return gen.register_version("base", tiny_model_dir)


def _answer(version, prompt, text, index=0) -> Response:
    return Response.objects.create(prompt=prompt, version=version, text=text, sample_index=index, token_count=3)


def test_spin_pairs_each_reference_with_the_starting_versions_own_answers_only(tiny_base, tmp_path):
    other = gen.register_version("other", tiny_base.path, parent=tiny_base, make_current=False)
    two = Prompt.objects.create(text="Q two references", split="train")
    one = Prompt.objects.create(text="Q one reference", split="train")
    bare = Prompt.objects.create(text="Q without a reference", split="train")
    held = Prompt.objects.create(text="Q on eval", split="eval")
    for prompt, text in ((two, "R1"), (two, "R2"), (one, "R"), (held, "E")):
        Response.objects.create(prompt=prompt, text=text, is_reference=True)
    own = [_answer(tiny_base, two, "s0", 0), _answer(tiny_base, two, "s1", 1), _answer(tiny_base, two, "s2", 2),
           _answer(tiny_base, one, "t0", 0), _answer(tiny_base, one, "R", 1)]  # the last equals the reference
    _answer(tiny_base, two, "R2", 3)  # equal to the prompt's other reference: never rejected in favour of R1
    _answer(tiny_base, bare, "u0")  # no reference: no pair
    _answer(tiny_base, held, "e0")  # an eval prompt: never trained on
    _answer(other, one, "another version's answer")

    data = spin_data(input_version=tiny_base, reference=tiny_base, max_length=96)
    made = sorted((p.prompt, p.chosen, p.rejected) for p in data.pairs)
    assert made == [("Q one reference", "R", "t0"),
                    ("Q two references", "R1", "s0"), ("Q two references", "R1", "s2"),
                    ("Q two references", "R2", "s1")]
    assert all(p.preference_prob is None for p in data.pairs)  # a hard label: the reference is chosen
    assert {r.pk for _, r in data.rows} == {own[0].pk, own[1].pk, own[2].pk, own[3].pk}
    assert not data.heldout

    # held out by prompt, as labelled pairs are, once there are enough pairs
    fraction = next(f / 100 for f in range(5, 96) if is_heldout(two.pk, f / 100) != is_heldout(one.pk, f / 100))
    split = spin_data(input_version=tiny_base, reference=tiny_base, max_length=96, heldout_fraction=fraction,
                      heldout_min_pairs=4)
    assert split.holding_out and len(split.pairs) + len(split.heldout) == 4 and split.pairs and split.heldout
    out = two if is_heldout(two.pk, fraction) else one
    assert {p.prompt for p in split.heldout} == {out.text} and out.text not in {p.prompt for p in split.pairs}
    assert not spin_data(input_version=tiny_base, reference=tiny_base, max_length=96, heldout_fraction=fraction,
                         heldout_min_pairs=5).heldout  # too few pairs: every pair trains


def test_a_spin_round_trains_on_references_over_sampled_answers_and_registers_a_version(tiny_base, staff, settings,
                                                                                      tmp_path, client):
    settings.MODELS_DIR = tmp_path / "models"
    settings.PREFLOOP_HELDOUT_FRACTION = 0.0
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2

    # no reference answers yet: the run fails saying what to do, and trains nothing
    empty = train.run_training(train.start_training_run(data_choice="spin", reference_choice="start",
                                                        params=FAST_TRAINING, enqueue=False).pk)
    assert empty.status == "failed" and "no SPIN pairs" in empty.error and "'reference'" in empty.error
    assert ModelVersion.objects.count() == 1

    import_prompts(_jsonl(tmp_path / "spin.jsonl", [
        {"prompt": f"Question {i}: name a colour.", "reference": f"The colour number {i} is blue."} for i in range(6)
    ]))
    Prompt.objects.create(text="Eval: name an animal.", split="eval")
    job = gen.start_generation_job(tiny_base, n_prompts=6, config=SamplingConfig(n=2, max_new_tokens=8, seed=0),
                                   enqueue=False)
    gen.run_generation_job(job.pk)
    LabellingRound.objects.filter(number=1).update(close_width=0.99)

    client.force_login(staff)
    page = client.get("/training/").content.decode()
    # the preview offers it; its answers' tokens are not claimed, the reference answers being untokenized
    assert 'data-choice="spin"' in page and "not counted: 6 imported or reference answers" in page

    run = train.run_training(train.start_training_run(data_choice="spin", reference_choice="start",
                                                      params=FAST_TRAINING, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    # every pair here is scored whole, so each answer's log-prob is its own whatever its partner: all are cached,
    # the reference answers' too (a pair cut to max_length caches nothing: tests/annotate/test_selection.py)
    cached = set(ReferenceLogp.objects.values_list("response_id", flat=True))
    trained = Response.objects.filter(version=tiny_base) | Response.objects.filter(is_reference=True)
    assert cached == set(trained.values_list("pk", flat=True))
    assert run.pairs == Response.objects.filter(version=tiny_base).count() == 12
    assert run.output_version is not None and run.reference_version == tiny_base
    assert LabellingRound.objects.get(number=1).closed_at is None  # SPIN read no label: labelling goes on
    assert run.metrics["pairs"] == 12 and run.metrics["mean_loss"] > 0
    assert TrainingRun.objects.get(pk=run.pk).data_choice == "spin"


def test_a_spin_round_is_refused_against_base_after_the_first_round_or_with_measured_agreement(tiny_base):
    later = gen.register_version("round-1", tiny_base.path, parent=tiny_base)
    with pytest.raises(train.TrainingError, match="choose the reference 'start'"):
        train.start_training_run(input_version=later, data_choice="spin", reference_choice="base", enqueue=False)
    with pytest.raises(train.TrainingError, match="SPIN reads no label"):
        train.start_training_run(input_version=later, data_choice="spin", reference_choice="start", enqueue=False,
                                 params={"label_agreement": "measured"})
    assert not TrainingRun.objects.exists()
    # from base, base is the starting version: either name means the same reference
    assert train.start_training_run(input_version=tiny_base, data_choice="spin", enqueue=False).reference_version \
        == tiny_base


def test_a_spin_round_whose_pairs_are_all_held_out_says_so(tiny_base, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    prompt = next(p for p in (Prompt.objects.create(text=f"Question {i}", split="train") for i in range(50))
                  if is_heldout(p.pk, 0.5))
    Response.objects.create(prompt=prompt, text="The reference.", is_reference=True)
    for i in range(2):
        _answer(tiny_base, prompt, f"own answer {i}", i)
    settings.PREFLOOP_HELDOUT_FRACTION, settings.PREFLOOP_HELDOUT_MIN_PAIRS = 0.5, 2
    run = train.run_training(train.start_training_run(data_choice="spin", params=FAST_TRAINING, enqueue=False).pk)
    assert run.status == "failed" and "all 2 are on held-out prompts" in run.error


def test_a_self_play_sampling_job_samples_only_prompts_with_a_reference_and_makes_no_pair(tiny_base):
    from annotate.models import Pair

    with_ref = [Prompt.objects.create(text=f"Referenced {i}", split="train") for i in range(3)]
    for prompt in with_ref:
        Response.objects.create(prompt=prompt, text="Reference.", is_reference=True)
    Prompt.objects.create(text="No reference", split="train")
    job = gen.start_generation_job(tiny_base, n_prompts=10, config=SamplingConfig(n=2, max_new_tokens=4),
                                   pairing="none", with_reference=True, enqueue=False)
    assert sorted(job.params["prompt_ids"]) == sorted(p.pk for p in with_ref)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded" and job.pairs_made == 0 and not Pair.objects.exists()
    assert Response.objects.filter(version=tiny_base).count() == 6
    # all answered now: another such job finds none, and says what it looked for
    with pytest.raises(gen.GenerationError, match="with a reference answer"):
        gen.start_generation_job(tiny_base, n_prompts=10, config=SamplingConfig(n=2, max_new_tokens=4),
                                 pairing="none", with_reference=True, enqueue=False)


def test_the_admin_lists_reference_answers_apart_and_cannot_turn_a_sample_into_one(db, admin_client):
    prompt = Prompt.objects.create(text="Name a tree.")
    reference = Response.objects.create(prompt=prompt, text="An oak, the reference.", is_reference=True, source="p.jsonl")
    sample = Response.objects.create(prompt=prompt, text="A sampled birch.")
    url = "/admin/generation/response/"
    assert "?is_reference__exact=1" in admin_client.get(url).content.decode()  # a filter in the sidebar
    references = admin_client.get(url, {"is_reference__exact": "1"}).content.decode()
    assert "An oak, the reference." in references and "A sampled birch." not in references
    samples = admin_client.get(url, {"is_reference__exact": "0"}).content.decode()
    assert "A sampled birch." in samples and "An oak, the reference." not in samples
    # the flag is the importer's: a change form that sends it changes nothing
    form = admin_client.get(f"{url}{sample.pk}/change/").content.decode()
    assert 'name="is_reference"' not in form
    admin_client.post(f"{url}{sample.pk}/change/", {"prompt": prompt.pk, "text": sample.text, "sample_index": 0,
                                                      "token_count": 0, "sampling_params": "{}", "is_reference": "on"})
    sample.refresh_from_db()
    reference.refresh_from_db()
    assert (sample.is_reference, reference.is_reference) == (False, True)
