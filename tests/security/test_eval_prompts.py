"""Row 11 of issue 17: a preference imported for a prompt that is, case aside, an eval prompt attached to that eval
prompt and was trained on. Now such rows are set aside and the import says so (page and command), and the training
data set never holds a pair on an eval prompt, whatever path the pair came in by."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from annotate.exporters import export_preferences
from annotate.models import Pair
from annotate.services import decided_pairs, label_pair
from generation.models import ModelVersion, Prompt
from tests.annotate.factories import make_pair, make_user
from tests.annotate.importing import upload
from training.dataset import round_data

pytestmark = pytest.mark.django_db

EVAL_TEXT = "What is the capital of France?"


@pytest.fixture
def eval_prompt():
    return Prompt.objects.create(text=EVAL_TEXT, split=Prompt.EVAL)


def _file(*prompts: str) -> bytes:
    return "".join(json.dumps({"prompt": p, "chosen": f"good answer to {p}", "rejected": "bad"}) + "\n"
                   for p in prompts).encode()


def test_an_imported_preference_on_an_eval_prompt_is_set_aside_and_reported(client, staff, eval_prompt):
    client.force_login(staff)
    job, response = upload(client, "prefs.jsonl", _file("Name a colour.", "  WHAT is the capital of   france? "),
                           kind="preferences")
    html = response.content.decode()
    assert response.status_code == 200 and job.status == "succeeded"
    assert "1 added, 0 already present, 1 set aside because their prompt is an eval prompt" in html
    assert "line 2" in html
    assert not Pair.objects.filter(prompt=eval_prompt).exists()
    assert Prompt.objects.get(pk=eval_prompt.pk).split == Prompt.EVAL
    assert Pair.objects.count() == 1


def test_the_commands_print_what_was_set_aside(tmp_path, eval_prompt):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_bytes(_file(EVAL_TEXT.upper()))
    out = StringIO()
    call_command("import_preferences", str(prefs), stdout=out)
    assert "0 added, 0 already present, 1 set aside because their prompt is an eval prompt" in out.getvalue()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": EVAL_TEXT.lower(), "response_a": "Paris", "response_b": "Lyon"}) + "\n")
    out = StringIO()
    call_command("import_pairs", str(pairs), stdout=out)
    assert "1 set aside" in out.getvalue() and not Pair.objects.exists()


def test_a_training_round_never_holds_a_pair_on_an_eval_prompt_whatever_its_path(eval_prompt, tmp_path):
    """A pair on an eval prompt made another way (a generation job, the admin): labelled, and left out of the round's
    data set and the export, while a train prompt's pair goes in."""
    version = ModelVersion.objects.create(name="v0", path="/nonexistent", is_current=True)
    on_eval = make_pair(eval_prompt, "Paris.", "Berlin.")
    on_train = make_pair(None, "A good answer.", "A bad one.")
    annotator = make_user()
    label_pair(on_eval.pk, annotator, "left")
    label_pair(on_train.pk, annotator, "left")
    data = round_data(reference=version, max_length=128, heldout_fraction=0.0)
    assert [p.key for p in data.pairs] == [on_train.pk]
    assert on_eval.pk not in {p.key for p in data.heldout}
    assert [d.pair.pk for d in decided_pairs()] == [on_train.pk]
    out = tmp_path / "out.jsonl"
    export_preferences(out, fmt="jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pair_id"] for r in rows] == [on_train.pk]
