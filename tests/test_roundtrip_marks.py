"""Export, wipe, import, export: the cut-off marks and the comments come back.

The export writes `truncated`, `chosen_truncated`, `rejected_truncated` and `comments`, and the import ignored them:
a re-imported cut answer lost its mark, and with it the cut rule and rule_penalty (both read the answer's finish
reason), and the labels' comments were replaced by where the row was imported from.
"""
from __future__ import annotations

import json

import pytest

from annotate.exporters import export_preferences
from annotate.importers import ImportProblem, import_pairs, import_preferences
from annotate.models import Assignment, Label, LabellingRound, Pair
from annotate.services import label_pair
from generation.models import Prompt, Response
from tests.annotate.factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db

# What an import brings back of a row. The rest says who labelled it, when and under which id on the exporting
# instance (pair_id, annotator_ids, labelled_at, judge_labels, vote_share): after a wipe the import account holds one
# label per pair in their place.
KEPT = ("prompt", "chosen", "rejected", "preference_prob", "round", "gold", "truncated", "chosen_truncated",
        "rejected_truncated", "comments")


def _read(path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(({k: row[k] for k in KEPT} for row in rows), key=lambda row: row["chosen"])


def _cut(pair, a: str, b: str) -> None:
    Response.objects.filter(pk=pair.response_a_id).update(finish_reason=a)
    Response.objects.filter(pk=pair.response_b_id).update(finish_reason=b)


def _labelled_instance() -> None:
    people = [make_user() for _ in range(3)]
    round_ = make_round(4)
    # the finished answer chosen over the cut one, with a comment saying why
    first = make_pair(text_a="So, you need", text_b="A finished answer.", round=round_)
    _cut(first, "length", "stop")
    label_pair(first.pk, people[0], "right", comment="the other stops mid-sentence")
    # a cut answer chosen all the same (the judge's cut rule does not bind people), two slight votes and one clear
    second = make_pair(text_a="Cut but right: the answer is", text_b="Finished and wrong.", labels_needed=3)
    _cut(second, "length", "stop")
    label_pair(second.pk, people[0], "left", strength="slight")
    label_pair(second.pk, people[1], "left", strength="slight", comment="close call")
    label_pair(second.pk, people[2], "right", strength="clear")
    # both finished, no comment
    third = make_pair(text_a="Plain and finished.", text_b="Also finished, worse.")
    _cut(third, "stop", "stop")
    label_pair(third.pk, people[1], "left")


def _wipe() -> None:
    Label.objects.all().delete()
    Assignment.objects.all().delete()
    Pair.objects.all().delete()
    Response.objects.all().delete()
    Prompt.objects.all().delete()
    LabellingRound.objects.all().delete()


@pytest.mark.parametrize("soft_labels", [False, True])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_wipe_import_export_gives_the_same_rows(tmp_path, fmt, soft_labels):
    _labelled_instance()
    first = export_preferences(tmp_path / f"first.{fmt}", fmt=fmt, soft_labels=soft_labels)
    before = _read(first.path)
    assert [row["chosen_truncated"] for row in before] == [False, True, False]  # the case is what it says
    assert [row["comments"] for row in before] == [["the other stops mid-sentence"], ["close call"], []]
    _wipe()
    result = import_preferences(first.path)
    assert result.created == 3
    again = export_preferences(tmp_path / f"again.{fmt}", fmt=fmt, soft_labels=soft_labels)
    assert _read(again.path) == before
    # where the cut rule and rule_penalty read it: the answer's finish reason
    cut = Response.objects.get(text="So, you need")
    assert cut.truncated and cut.finish_reason == "length"
    assert Response.objects.get(text="A finished answer.").finish_reason == "stop"


def test_rows_without_the_columns_import_as_before(tmp_path):
    """Another data set's rows say nothing of cut-off answers: their finish reason stays unknown, and the label says
    where it came from."""
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "good", "rejected": "bad"}) + "\n")
    assert import_preferences(path).created == 1
    assert set(Response.objects.values_list("finish_reason", flat=True)) == {""}
    assert Label.objects.get().comment == "imported from other.jsonl line 1"


def test_csv_cells_give_the_marks_as_text(tmp_path):
    path = tmp_path / "marks.csv"
    path.write_text('prompt,chosen,rejected,truncated,chosen_truncated,rejected_truncated,comments\n'
                    'q,good,cut,True,False,True,"[""cut mid-word""]"\n'
                    'r,fine,also fine,,,,\n')
    assert import_preferences(path).created == 2
    assert Response.objects.get(text="cut").finish_reason == "length"
    assert Response.objects.get(text="good").finish_reason == "stop"
    assert Response.objects.get(text="fine").finish_reason == ""
    assert sorted(Label.objects.values_list("comment", flat=True)) == ["", "cut mid-word"]


def test_a_preference_onto_a_pushed_pair_marks_its_unknown_answers_only(tmp_path):
    """Pushed unlabelled first (no marks), then labelled by an export's row: the marks land on the answers whose
    finish reason was unknown; a sampled answer's own is never replaced."""
    pushed = tmp_path / "pairs.jsonl"
    pushed.write_text(json.dumps({"prompt": "q", "response_a": "finished", "response_b": "cut off"}) + "\n")
    import_pairs(pushed)
    sampled = make_pair(text_a="sampled and cut", text_b="sampled, finished")
    _cut(sampled, "length", "stop")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "q", "chosen": "finished", "rejected": "cut off", "truncated": True, "chosen_truncated": False,
         "rejected_truncated": True, "comments": ["stops short"]},
        # says the other way round: the model's own record stands
        {"prompt": sampled.prompt.text, "chosen": "sampled, finished", "rejected": "sampled and cut",
         "truncated": False, "chosen_truncated": False, "rejected_truncated": False, "comments": []},
    ]) + "\n")
    assert import_preferences(prefs).created == 2
    assert Response.objects.get(text="cut off").finish_reason == "length"
    assert Response.objects.get(text="finished").finish_reason == "stop"
    assert Response.objects.get(text="sampled and cut").finish_reason == "length"
    assert Label.objects.get(pair__response_a__text="finished").comment == "stops short"


@pytest.mark.parametrize("fields, problem", [
    ({"chosen_truncated": "yes", "rejected_truncated": False}, "field 'chosen_truncated': expected true or false, got 'yes'"),
    ({"chosen_truncated": False, "rejected_truncated": 1}, "field 'rejected_truncated': expected true or false, got '1'"),
    ({"truncated": 0.5}, "field 'truncated': expected true or false, got '0.5'"),
    ({"truncated": True}, "field 'truncated': true, but which answer was cut off is not said"),
    ({"truncated": True, "chosen_truncated": False, "rejected_truncated": False},
     "field 'truncated': true, but 'chosen_truncated' and 'rejected_truncated' are both false"),
    ({"truncated": False, "chosen_truncated": False, "rejected_truncated": True},
     "field 'rejected_truncated': true, but 'truncated' (either answer cut off) is false"),
    ({"comments": {"why": "x"}}, "field 'comments': expected a list of comments (texts), got dict"),
    ({"comments": ["fine", 3]}, "field 'comments': comment 2: expected text, got int"),
    ({"comments": ["a\x00b"]}, "field 'comments: comment 1': contains a NUL character"),
])
def test_bad_marks_are_refused_naming_the_file_line_and_field_and_store_nothing(tmp_path, fields, problem):
    path = tmp_path / "bad.jsonl"
    rows = [{"prompt": "fine", "chosen": "a", "rejected": "b"},
            {"prompt": "q", "chosen": "good", "rejected": "bad", **fields}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(ImportProblem) as caught:
        import_preferences(path)
    (message,) = caught.value.problems
    assert message.startswith(f"bad.jsonl: line 2: {problem}")
    assert not Pair.objects.exists() and not Response.objects.exists()


def test_a_csv_comment_that_starts_with_a_bracket_is_one_comment(tmp_path):
    """A comment cell such as "[sic] typo in B" was read as a JSON list, refused as one, and the whole file imported
    nothing (found by an outside review); a cell that is a JSON list of texts is still the list."""
    import pandas as pd

    pd.DataFrame({"prompt": ["q1", "q2", "q3", "q4"], "chosen": ["a", "b", "c", "d"], "rejected": ["w", "x", "y", "z"],
                  "comments": ["[sic] typo in B", "[1, 2] is right", '["first", "second"]', "[1, 2]"]}).to_csv(
        tmp_path / "c.csv", index=False)
    assert import_preferences(tmp_path / "c.csv").created == 4
    comments = {label.pair.prompt.text: label.comment for label in Label.objects.select_related("pair__prompt")}
    assert comments["q1"] == "[sic] typo in B" and comments["q2"] == "[1, 2] is right" and comments["q4"] == "[1, 2]"
    assert "first" in comments["q3"] and "second" in comments["q3"] and "[" not in comments["q3"]
