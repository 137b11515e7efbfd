"""What a round trains on, beyond labels and held-out prompts: pairs that cannot teach are left out, and said."""
import json

from annotate.importers import import_preferences
from annotate.services import label_pair
from generation import services as gen
from training.dataset import round_data


def test_a_decided_pair_whose_two_answers_are_one_text_is_left_out_and_counted(db, tiny_model_dir, tmp_path):
    base = gen.register_version("base", tiny_model_dir)
    rows = [{"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"A bad one {i}."}
            for i in range(3)]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_preferences(path)
    # HH-RLHF has such rows; imports refuse them now, but pairs stored before that (or made by hand) still exist
    from tests.annotate.factories import make_pair, make_prompt, make_user

    same = make_pair(prompt=make_prompt(text="Same?"), text_a="The same words.", text_b="The same words.")
    label_pair(same.pk, make_user(), "left")

    data = round_data(reference=base, max_length=128)
    assert sorted(p.prompt for p in data.pairs) == ["Question 0?", "Question 1?", "Question 2?"]
    assert data.same_answers == 1
    # held out or trained, it is in neither: h is 0 whatever the weights, and would count as a wrong answer
    held = round_data(reference=base, max_length=128, heldout_fraction=0.99, heldout_min_pairs=1)
    assert "Same?" not in {p.prompt for p in held.pairs + held.heldout} and held.same_answers == 1


def test_new_data_is_the_starting_versions_labelling_round_whoever_sampled_its_pairs(db, tmp_path, settings):
    """"new" was described as "only the labels of the starting version's pairs", but a round is picked by its
    labelling round: a candidate the gate kept out ("round-1") and the round trained again from the same version
    ("round-1-2") share labelling round 2, so pairs the kept-out candidate sampled are trained on too, and round 1's
    are not. The choice now says so (found by an outside review); this pins what it says."""
    from annotate.models import Label, LabellingRound, Pair
    from generation.models import Prompt, Response
    from tests.annotate.factories import make_user
    from training import services as train
    from training.models import TrainingRun

    settings.PREFLOOP_HELDOUT_FRACTION = 0
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_text("")  # registered, never loaded
    base = gen.register_version("base", model)
    kept_out = gen.register_version("round-1", model, parent=base)
    retrained = gen.register_version("round-1-2", model, parent=base)
    person = make_user()
    for version, number in ((base, 1), (kept_out, 2), (retrained, 2)):
        prompt = Prompt.objects.create(text=f"Question of {version.name}?")
        a, b = (Response.objects.create(prompt=prompt, version=version, sample_index=k, text=f"{k} of {version.name}")
                for k in (0, 1))
        round_, _ = LabellingRound.objects.get_or_create(number=number)
        pair = Pair.objects.create(prompt=prompt, response_a=a, response_b=b, round=round_, labels_done=1)
        Label.objects.create(pair=pair, annotator=person, choice="a", side="left", left_is_a=True)
    data = train.data_for(retrained, TrainingRun.DATA_NEW, reference=base, max_length=64)
    assert sorted(p.chosen for p in data.pairs) == ["0 of round-1", "0 of round-1-2"]
    assert "labelling round" in TrainingRun(data_choice=TrainingRun.DATA_NEW).get_data_choice_display()
