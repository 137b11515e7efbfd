"""From a key press to the exported TRL row: majority, ties and both-bad kept out, soft labels, formats."""
import json
import re

import pandas as pd
import pyarrow.parquet
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from annotate.models import AnnotatorProfile, ExportJob, Label
from annotate.services import decided_pairs, label_pair

from . import exporting
from .factories import lease_of, make_pair, make_prompt, make_round, make_staff, make_user, shown_pair

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def _export(tmp_path, *args, **options) -> list[dict]:
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", str(out), *args, **options)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    out.unlink()  # an export never overwrites a file: the next one needs the name free
    return rows


def _panel_text(html: str, side: str) -> str:
    panel = re.search(rf'data-side="{side}">.*?<div class="md">(.*?)</div>', html, re.S).group(1)
    return re.sub(r"<.*?>", "", panel).strip()


def test_round_trip_from_key_press_to_export(tmp_path, annotator):
    client = Client()
    client.force_login(annotator)
    for i in range(6):
        make_pair(text_a=f"response A of pair {i}", text_b=f"response B of pair {i}")
    expected = []
    html = client.get(reverse("annotate:label")).content.decode()
    for side in ["left", "right", "left", "right", "tie", "both_bad"]:
        pair_id = shown_pair(html)
        shown = {s: _panel_text(html, s) for s in ("left", "right")}
        if side in ("left", "right"):
            other = "right" if side == "left" else "left"
            expected.append((pair_id, shown[side], shown[other]))
        html = client.post(reverse("annotate:submit"), {"lease": lease_of(pair_id), "side": side}, **HTMX).content.decode()
    rows = _export(tmp_path)
    assert [(r["pair_id"], r["chosen"], r["rejected"]) for r in rows] == sorted(expected)
    assert all(r["annotator_ids"] == [annotator.pk] and len(r["labelled_at"]) == 1 for r in rows)


def _labels(pair, *sides, strength=None):
    for side in sides:
        label_pair(pair.pk, make_user(), side, strength=strength)  # leased on the spot: left is A


def test_majority_decides_and_ties_or_both_bad_give_no_row(tmp_path):
    prompt = make_prompt(text="Which?")
    a_wins = make_pair(prompt, "good", "bad", labels_needed=3)
    _labels(a_wins, "left", "left", "right")
    tie = make_pair(labels_needed=3)
    _labels(tie, "tie", "tie", "left")
    both_bad = make_pair(labels_needed=1)
    _labels(both_bad, "both_bad")
    split = make_pair(labels_needed=2)
    _labels(split, "left", "right")
    rows = _export(tmp_path)
    assert [r["pair_id"] for r in rows] == [a_wins.pk]
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == ("Which?", "good", "bad")
    assert rows[0]["vote_share"] == pytest.approx(2 / 3) and len(rows[0]["annotator_ids"]) == 3
    assert _export(tmp_path, min_agreement=0.7) == []


def test_strength_and_soft_labels(tmp_path):
    pair = make_pair(labels_needed=3)
    _labels(pair, "left", "left", strength="slight")
    _labels(pair, "right", strength="clear")
    hard = _export(tmp_path)[0]
    assert hard["preference_prob"] == pytest.approx(0.75)  # the majority's own strength
    soft = _export(tmp_path, "--soft-labels")[0]
    assert soft["preference_prob"] == pytest.approx((0.75 + 0.75 + 0.0) / 3)


def test_soft_labels_that_weigh_the_other_answer_higher_turn_the_row(tmp_path):
    """Two weak votes for A (0.55, as an import may carry) and one clear vote for B: the soft probability that A is
    preferred is 0.37, and the export wrote A as chosen with preference_prob 0.37, which its own import refuses."""
    pair = make_pair(labels_needed=3)
    _labels(pair, "left", "left")
    _labels(pair, "right", strength="clear")
    Label.objects.filter(pair=pair, choice="a").update(preference_prob=0.55)
    soft = _export(tmp_path, "--soft-labels")[0]
    assert soft["chosen"] == pair.response_b.text and soft["preference_prob"] == pytest.approx(1 - 1.1 / 3)
    assert soft["vote_share"] == pytest.approx(1 / 3)
    assert _export(tmp_path)[0]["chosen"] == pair.response_a.text  # hard labels: the majority's choice


def test_automatic_labels_can_be_left_out(tmp_path):
    judge = make_user("judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True)
    pair = make_pair()
    label_pair(pair.pk, judge, "left")
    assert Label.objects.get().is_automatic
    rows = _export(tmp_path)
    assert len(rows) == 1 and rows[0]["judge_labels"] == 1, "a row says how many of its labels are a judge's"
    assert _export(tmp_path, "--no-automatic") == []
    assert decided_pairs(include_automatic=False) == []


def test_chats_export_as_conversations_and_rounds_filter(tmp_path):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
            {"role": "user", "content": "Bye?"}]
    one, two = make_round(number=1), make_round(number=2)
    chat_pair = make_pair(make_prompt(messages=chat, text="Bye?"), "Bye!", "...", round=one)
    text_pair = make_pair(make_prompt(text="Plain"), "x", "y", round=two)
    for pair in (chat_pair, text_pair):
        _labels(pair, "left")
    rows = _export(tmp_path)
    assert rows[0]["prompt"] == chat and rows[0]["chosen"] == [{"role": "assistant", "content": "Bye!"}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Plain"}]
    only_two = _export(tmp_path, round=[2])
    assert [r["pair_id"] for r in only_two] == [text_pair.pk] and only_two[0]["prompt"] == "Plain"


def test_gold_pairs_use_their_known_answer():
    gold = make_pair(is_gold=True, gold_choice="b")
    _labels(gold, "left")  # a wrong answer does not change the truth
    (decided,) = decided_pairs()
    assert decided.pair == gold and decided.chosen == gold.response_b and decided.preference_prob == 1.0
    pair, chosen, rejected, prob = decided
    assert rejected == gold.response_a


def test_a_gold_pairs_vote_share_is_its_labels_agreement_with_the_known_answer(tmp_path):
    gold = make_pair(is_gold=True, gold_choice="a", labels_needed=3)
    _labels(gold, "left", "right", "left")  # two of three found the known answer: the export said 1.0
    unlabelled = make_pair(is_gold=True, gold_choice="b")
    rows = {r["pair_id"]: r for r in _export(tmp_path)}
    assert rows[gold.pk]["vote_share"] == pytest.approx(2 / 3) and rows[gold.pk]["chosen"] == gold.response_a.text
    assert rows[unlabelled.pk]["vote_share"] == 1.0
    # the agreement filter is about majorities: a gold pair is decided by its known answer and stays in
    assert {r["pair_id"] for r in _export(tmp_path, min_agreement=0.9)} == {gold.pk, unlabelled.pk}


def test_parquet_and_hf_formats(tmp_path):
    pair = make_pair(text_a="alpha", text_b="beta")
    _labels(pair, "right")
    call_command("export_preferences", str(tmp_path / "p.parquet"), format="parquet")
    frame = pd.read_parquet(tmp_path / "p.parquet")
    assert list(frame["chosen"]) == ["beta"] and list(frame["rejected"]) == ["alpha"]
    _labels(make_pair(text_a="gamma", text_b="delta", round=make_round(3)), "left")
    call_command("export_preferences", str(tmp_path / "r.parquet"), format="parquet")
    table = pyarrow.parquet.read_table(tmp_path / "r.parquet")
    assert str(table.schema.field("round").type) == "int64"  # with one row of no round: it was 3.0 and NaN
    assert sorted(table.column("round").to_pylist(), key=str) == [3, None]
    datasets = pytest.importorskip("datasets")
    call_command("export_preferences", str(tmp_path / "hf"), format="hf")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded[0]["chosen"] == "beta" and set(loaded.column_names) >= {"prompt", "chosen", "rejected"}


def test_staff_export_button_starts_a_job_whose_page_offers_the_file(client, staff):
    pair = make_pair(text_a="one", text_b="two")
    _labels(pair, "left")
    client.force_login(staff)
    page = client.get(reverse("annotate:export")).content.decode()
    assert '<form method="post"' in page and "csrfmiddlewaretoken" in page and ">Export</button>" in page
    job, response = exporting.export(client, format="jsonl")
    assert job.status == "succeeded" and (job.done, job.total) == (1, 1)
    row = json.loads(exporting.content(response).decode().splitlines()[0])
    assert (row["chosen"], row["rejected"]) == ("one", "two")


def test_cut_off_answers_are_marked_on_the_label_page_and_in_the_export(tmp_path, annotator):
    from generation.models import Response

    pair = make_pair(text_a="So, you need", text_b="A finished answer.")
    Response.objects.filter(pk=pair.response_a_id).update(finish_reason="length", token_count=128)
    Response.objects.filter(pk=pair.response_b_id).update(finish_reason="stop")
    client = Client()
    client.force_login(annotator)
    html = client.get(reverse("annotate:label")).content.decode()
    cut_side = "left" if _panel_text(html, "left") == "So, you need" else "right"
    finished_side = "right" if cut_side == "left" else "left"
    panel = lambda side: re.search(rf'data-side="{side}">(.*?)</article>', html, re.S).group(1)  # noqa: E731
    assert "cut off at the token limit" in panel(cut_side)
    assert "cut off at the token limit" not in panel(finished_side)
    client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": finished_side, "comment": "the other stops"},
                **HTMX)
    (row,) = _export(tmp_path)
    assert row["chosen"] == "A finished answer." and row["truncated"] is True
    assert row["chosen_truncated"] is False and row["rejected_truncated"] is True
    assert row["comments"] == ["the other stops"]


def test_comments_are_shown_on_the_quality_page(staff, annotator):
    pair = make_pair()
    label_pair(pair.pk, annotator, "left", comment="both miss the question's second half")
    label_pair(make_pair().pk, annotator, "right")
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("annotate:quality")).content.decode()
    comments = re.search(r'<table class="comments">(.*?)</table>', page, re.S).group(1)
    assert "both miss the question&#x27;s second half" in comments and "ann" in comments
    assert comments.count("data-comment=") == 1


def test_the_export_page_says_judge_labels_are_included_and_counts_them(client):
    staff = make_staff("boss", "annotate.add_exportjob")
    judge = make_user("judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True)
    person = make_user("anna")
    first, second = make_pair(labels_needed=2), make_pair()
    label_pair(first.pk, judge, "left")
    label_pair(first.pk, person, "left")
    label_pair(second.pk, person, "right")
    client.force_login(staff)
    page = client.get("/annotate/export/").content.decode()
    assert "Stored labels: 2 by people, 1 by judges." in page
    assert "Include judge labels" in page and 'name="include_automatic"' in page and "checked" in page


def test_an_unknown_round_is_refused_not_exported_empty(tmp_path):
    from django.core.management import CommandError

    make_round(2)
    for bad in ("77", "-1", "99999999999999999999"):
        with pytest.raises(CommandError, match=f"--round {bad}: no such labelling round"):
            call_command("export_preferences", str(tmp_path / "p.jsonl"), "--round", bad)
        assert not (tmp_path / "p.jsonl").exists()
    assert _export(tmp_path, "--round", "2") == []  # a round that exists and has no decided pair: empty, truly


def test_the_export_page_refuses_an_unknown_round_as_the_command_does(client, staff):
    """?round=99 downloaded an empty file, where the command says there is no such round."""
    make_round(2)
    client.force_login(staff)
    job, refused = exporting.export(client, round=99, format="jsonl")
    assert job is None and refused.status_code == 400 and "Round: no labelling round 99" in refused.content.decode()
    assert not ExportJob.objects.exists()
    job, ok = exporting.export(client, round=2, format="jsonl")
    assert job.status == "succeeded" and exporting.content(ok) == b""  # a round with no decided pair: empty, truly


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_export_read_back_into_the_same_instance_counts_no_label_twice(tmp_path, fmt):
    """Its rows were added onto their pairs as the import account's labels: each decision counted twice, and a pair
    two people split became a majority."""
    from annotate.exporters import export_preferences
    from annotate.importers import import_preferences

    people = [make_user() for _ in range(2)]
    split, clear = make_pair(labels_needed=2), make_pair()
    label_pair(split.pk, people[0], "left")
    label_pair(split.pk, people[1], "right")
    label_pair(clear.pk, people[0], "right")
    before = Label.objects.count()
    out = export_preferences(tmp_path / f"p.{fmt}", fmt=fmt)
    result = import_preferences(out.path)
    assert (result.created, result.skipped) == (0, out.rows) and Label.objects.count() == before
    # another instance's row for the same texts (its pair_id names a pair of its own) is a label of its own
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": clear.prompt.text, "chosen": clear.response_b.text,
                                 "rejected": clear.response_a.text, "pair_id": clear.pk + 1000,
                                 "annotator_ids": [7]}) + "\n")
    assert import_preferences(other).created == 1 and Label.objects.count() == before + 1


def test_a_pair_id_no_database_id_can_be_is_another_data_sets_not_an_error(tmp_path):
    """A row's pair_id of 10**400 (or 1e300) crashed the import with OverflowError, naming no line or field (a 500
    from POST /preferences): such an id is no export's of ours, so the row is read as any other data set's."""
    from annotate.importers import import_preferences

    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "pair_id": pair_id, "annotator_ids": [1]}
            for i, pair_id in enumerate([10**400, 1e300, -5, 2**63, float("inf"), 3.5])]
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert import_preferences(path).created == len(rows)


@pytest.mark.django_db
@pytest.mark.parametrize("name, fmt, message", [
    ("out.parquet", "jsonl", "the name says parquet, but --format is jsonl: pass --format parquet, or name the file out.jsonl"),
    ("out.jsonl", "parquet", "the name says jsonl, but --format is parquet"),
    ("out.jsonl", "hf", "--format hf writes a folder, and this names a .jsonl file"),
])
def test_an_export_named_as_another_format_is_refused_before_anything_is_written(tmp_path, name, fmt, message):
    """`export_preferences out.parquet --format jsonl` wrote JSON Lines under a Parquet name (and --format hf a folder
    called x.jsonl): the Import page then refused the file as "not a Parquet file"."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("export_preferences", str(tmp_path / name), format=fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_an_export_under_a_file_names_that_file(tmp_path):
    """`export_preferences ok.jsonl/sub.jsonl` with ok.jsonl a file said "sub.jsonl: File exists" of a file that was
    not there."""
    from django.core.management.base import CommandError

    (tmp_path / "ok.jsonl").write_text("kept\n")
    with pytest.raises(CommandError, match=re.escape(f"{tmp_path / 'ok.jsonl'} is a file, not a folder")):
        call_command("export_preferences", str(tmp_path / "ok.jsonl" / "sub.jsonl"))
    assert (tmp_path / "ok.jsonl").read_text() == "kept\n"


def test_the_export_page_counts_imported_labels_apart_from_peoples(client):
    """The export page counted imported labels "by people" (the Quality page counts them as no one's judgement):
    found by an outside review."""
    from annotate.importers import import_account

    staff = make_user("boss", is_staff=True)
    person = make_user("anna")
    first, second = make_pair(), make_pair()
    label_pair(first.pk, import_account(), "left")
    label_pair(second.pk, person, "right")
    client.force_login(staff)
    page = client.get("/annotate/export/").content.decode()
    assert "Stored labels: 1 by people, 0 by judges, 1 imported (exported with people's" in page


def test_an_own_export_row_with_its_answers_swapped_disagrees_not_already_present(tmp_path):
    """This instance's own row with its answers swapped (edited by hand, or another instance's whose pair and
    labeller ids match ours) is not the same preference: it was dropped as "already present", the opposite
    preference lost without a word (found by an outside review); now it is said to disagree."""
    from annotate.exporters import export_preferences
    from annotate.importers import import_preferences

    pair = make_pair(text_a="good", text_b="bad")
    label_pair(pair.pk, make_user(), "left")
    out = export_preferences(tmp_path / "p.jsonl")
    (row,) = map(json.loads, out.path.read_text().splitlines())
    assert (row["chosen"], row["pair_id"]) == ("good", pair.pk)
    assert import_preferences(out.path).skipped == 1  # read back as it was: already present
    row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text(json.dumps(row) + "\n")
    result = import_preferences(swapped)
    assert (result.created, result.skipped, result.disagreeing) == (0, 0, (1,)), result
    assert Label.objects.count() == 1
