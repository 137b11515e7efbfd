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
