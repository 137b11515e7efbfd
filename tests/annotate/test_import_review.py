"""Imports found wrong by an outside review: a JSON array written on one line (json.dump's default) mixed its rows
up, another instance's export was taken for this one's, a twin pair took its twin's row, and fields were dropped
without a word."""
from __future__ import annotations

import json

import pytest

from annotate.importers import import_pairs, import_preferences
from annotate.models import Label, Pair

pytestmark = pytest.mark.django_db


def _one_line(tmp_path, rows, name="d.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows))  # as json.dump(rows, f) writes it: one line
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stored():
    return sorted((p.prompt.text, p.response_a.text, p.response_b.text) for p in Pair.objects.all())


def test_the_rows_of_a_one_line_json_array_keep_their_own_answers(tmp_path):
    rows = [{"prompt": "First question?", "chosen": "first good", "rejected": "first bad"},
            {"prompt": "Second question?", "chosen": "second good", "rejected": "second bad"},
            {"prompt": "Third question?", "chosen": "same", "rejected": "same"}]  # one text twice: not added
    result = import_preferences(_one_line(tmp_path, rows))
    assert result.created == 2 and _stored() == sorted((r["prompt"], r["chosen"], r["rejected"]) for r in rows[:2])
    again = import_preferences(_one_line(tmp_path, rows))
    assert (again.created, Pair.objects.count(), Label.objects.count()) == (0, 2, 2)


def test_two_pairs_of_one_prompt_in_a_one_line_array_are_two_pairs(tmp_path):
    rows = [{"prompt": "Same question?", "response_a": "first a", "response_b": "first b"},
            {"prompt": "Same question?", "response_a": "second a", "response_b": "second b"}]
    import_pairs(_one_line(tmp_path, rows))
    assert _stored() == [("Same question?", "first a", "first b"), ("Same question?", "second a", "second b")]


def test_a_one_line_arrays_comments_stay_on_their_rows_label(tmp_path):
    rows = [{"prompt": "First question?", "chosen": "first good", "rejected": "first bad",
             "comments": ["only about the first"]},
            {"prompt": "Second question?", "chosen": "second good", "rejected": "second bad"}]
    import_preferences(_one_line(tmp_path, rows))
    stored = {label.pair.prompt.text: label.comment for label in Label.objects.select_related("pair__prompt")}
    assert stored == {"First question?": "only about the first", "Second question?": "imported from d.json line 1 (element 2 of the array)"}


def test_another_instances_export_whose_pair_ids_match_ours_labels_our_pairs(tmp_path):
    """Two instances seeded from one pairs file give their pairs the same ids: the other's export named pairs here by
    those ids, was taken for this instance's own export ("already present"), and its labels were lost."""
    seed = _jsonl(tmp_path / "seed.jsonl", [{"prompt": f"Question {i}?", "response_a": f"answer one {i}",
                                             "response_b": f"a rather different answer {i}"} for i in range(3)])
    import_pairs(seed)
    pairs = list(Pair.objects.order_by("pk"))
    rows = [{"prompt": p.prompt.text, "chosen": p.response_a.text, "rejected": p.response_b.text,
             "preference_prob": 1.0, "vote_share": 1.0, "pair_id": p.pk, "round": None, "gold": False,
             "annotator_ids": [987654], "judge_labels": 0, "labelled_at": ["2025-01-01T00:00:00+00:00"],
             "truncated": False, "chosen_truncated": False, "rejected_truncated": False, "comments": []} for p in pairs]
    result = import_preferences(_jsonl(tmp_path / "other.jsonl", rows))
    assert result.created == 3 and Label.objects.count() == 3
    assert list(Pair.objects.order_by("pk").values_list("labels_done", flat=True)) == [1, 1, 1]


def test_an_export_read_back_adds_nothing_to_twin_pairs(tmp_path):
    """Two pairs of the same texts (both ways round, or the same two answers sampled twice), each labelled: read
    back, a row found its pair by texts, landed on the twin, and was added there as the import's label."""
    from annotate.exporters import export_preferences
    from annotate.services import label_pair
    from tests.annotate.factories import make_pair, make_prompt, make_user

    prompt = make_prompt(text="Say hi.")
    pairs = [make_pair(prompt, "Hi!", "Hello there, friend."), make_pair(prompt, "Hello there, friend.", "Hi!"),
             make_pair(prompt, "Hi!", "Hello there, friend.")]
    for pair, side in zip(pairs, ("left", "right", "left"), strict=True):
        label_pair(pair.pk, make_user(), side)
    before = sorted(Label.objects.values_list("pair_id", "annotator_id"))
    result = import_preferences(export_preferences(tmp_path / "e.jsonl").path)
    assert result.created == 0 and sorted(Label.objects.values_list("pair_id", "annotator_id")) == before


def test_a_parquet_column_named_twice_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from annotate.importers import ImportProblem

    table = pa.Table.from_arrays([pa.array(["p1"]), pa.array(["good"]), pa.array(["bad"]), pa.array(["p2"])],
                                 names=["prompt", "chosen", "rejected", "prompt"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(ImportProblem, match="d.parquet: column 'prompt' is named twice"):
        import_preferences(tmp_path / "d.parquet")
    assert not Pair.objects.exists()


def test_an_ultrafeedback_rows_prompt_that_differs_from_its_chat_is_refused_by_field(tmp_path):
    from annotate.importers import ImportProblem

    chat = [{"role": "user", "content": "Say hi"}]
    row = {"prompt": "What is two plus two?", "chosen": [*chat, {"role": "assistant", "content": "hi"}],
           "rejected": [*chat, {"role": "assistant", "content": "no"}], "score_chosen": 8, "score_rejected": 2}
    with pytest.raises(ImportProblem, match="u.jsonl: line 1: field 'prompt': 'What is two plus two\\?' differs"):
        import_preferences(_jsonl(tmp_path / "u.jsonl", [row]), fmt="ultrafeedback")
    import_preferences(_jsonl(tmp_path / "v.jsonl", [{**row, "prompt": "Say hi"}]), fmt="ultrafeedback")
    assert _stored() == [("Say hi", "hi", "no")]


def test_a_train_files_reference_onto_an_eval_prompt_is_set_aside_not_stored(tmp_path):
    from annotate.importers import import_prompts
    from generation.models import Prompt, Response

    Prompt.objects.create(text="Eval question?", split=Prompt.EVAL)
    result = import_prompts(_jsonl(tmp_path / "p.jsonl", [{"prompt": "Eval question?", "reference": "An answer."}]))
    assert (result.created, result.set_aside) == (0, (1,))
    assert not Response.objects.filter(is_reference=True).exists()


def test_a_pull_of_text_rows_refuses_a_chat_prompt_rather_than_cut_it(staff):
    from django.test import Client

    from annotate.services import label_pair
    from api.tokens import create_token
    from tests.annotate.factories import make_pair, make_prompt, make_user

    chat = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Name a colour."}]
    pair = make_pair(make_prompt(messages=chat, text="Name a colour."), "Rouge.", "Red.")
    label_pair(pair.pk, make_user(), "left")
    c = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'pull')[1]}")
    refused = c.get("/api/v1/preferences?conversational=false")
    assert refused.status_code == 409 and f"pair {pair.pk}'s prompt is a conversation" in refused.json()["detail"]
    rows = c.get("/api/v1/preferences").json()
    assert rows["conversational"] is True and rows["results"][0]["prompt"] == chat


def test_a_bad_row_of_a_one_line_array_is_named_by_its_element(tmp_path):
    from annotate.importers import ImportProblem

    rows = [{"prompt": f"Question {i}?", "chosen": "good", "rejected": "bad"} for i in range(5)]
    rows[3]["prompt"] = ""
    with pytest.raises(ImportProblem) as refused:
        import_preferences(_one_line(tmp_path, rows))
    assert refused.value.problems == ["d.json: line 1 (element 4 of the array): field 'prompt': empty"]
    rows[3]["prompt"] = "Question 3?"
    rows[1]["rejected"] = "good"  # one text twice: listed, by element
    result = import_preferences(_one_line(tmp_path, rows))
    assert result.created == 4 and [f"{line}" for line in result.same_answers] == ["1 (element 2 of the array)"]
    assert json.dumps(list(result.same_answers)) == "[1]"  # stored as the line number
