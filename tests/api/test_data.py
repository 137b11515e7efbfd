"""Push and pull over real HTTP with a token: all-or-nothing pushes that name the bad row, and a pull that returns
exactly the export page's rows."""
from __future__ import annotations

import json

import pytest
from django.test import Client as PageClient

from annotate.models import AnnotatorProfile, Label, Pair
from annotate.services import label_pair
from generation.models import Prompt
from prefloop_client import APIError
from tests.annotate import exporting
from tests.annotate.factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _preferences(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question {i}: what is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}."}
            for i in range(start, start + n)]


def test_a_pipeline_pushes_100_preferences_with_a_token(staff_api):
    result = staff_api.push_preferences(_preferences(100), round=3)
    assert result == {"created": 100, "skipped": 0, "set_aside": [], "disagreeing": [], "same_answers": [], "held_back": []}
    pairs = Pair.objects.filter(round__number=3)
    assert pairs.count() == 100 and Label.objects.filter(pair__in=pairs).count() == 100
    assert staff_api.push_preferences(_preferences(100), round=3)["skipped"] == 100  # pushed twice: nothing added
    pulled = staff_api.preferences(round=3, page_size=30)  # four pages
    assert sorted(r["chosen"] for r in pulled) == sorted(r["chosen"] for r in _preferences(100))


def test_a_bad_row_refuses_the_whole_push_and_names_its_line(staff_api):
    rows = _preferences(50)
    rows[36] = {"prompt": "Question 36", "chosen": "fine"}  # row 37: no rejected response
    with pytest.raises(APIError) as refused:
        staff_api.push_preferences(rows)
    assert refused.value.status == 400
    assert any("line 37" in p and "rejected" in p for p in refused.value.problems), refused.value.problems
    assert "line 37" in refused.value.detail
    assert not Pair.objects.exists() and not Prompt.objects.exists()  # nothing of the 49 good rows was stored


def test_a_row_that_is_a_list_is_refused_not_stored_as_several(staff_api):
    """The push writes each row as a line of JSON Lines, and a one-row push whose row was a list of objects was that
    file's JSON array: two prompts stored from one bad row."""
    with pytest.raises(APIError) as refused:
        staff_api.push_prompts([[{"prompt": "Say hi."}, {"prompt": "Say bye."}]])
    assert refused.value.status == 400
    assert refused.value.problems == ["api: line 1: expected a JSON object with named fields"]
    assert not Prompt.objects.exists()


def test_pushes_of_prompts_and_pairs_take_the_import_pages_checks(staff_api):
    assert staff_api.push_prompts([{"prompt": "Say hi."}, {"prompt": "Say bye."}], split="eval")["created"] == 2
    assert set(Prompt.objects.values_list("split", flat=True)) == {"eval"}
    result = staff_api.push_pairs([{"prompt": "Name a colour.", "response_a": "Red.", "response_b": "Blue."},
                                   {"prompt": "say hi.", "response_a": "Hi.", "response_b": "Hello."}], round=1)
    # row 2's prompt is an eval prompt
    assert result == {"created": 1, "skipped": 0, "set_aside": [2], "disagreeing": [], "same_answers": [], "held_back": []}
    with pytest.raises(APIError) as refused:
        staff_api.push_pairs([{"prompt": "x", "response_a": "y", "response_b": "z"}, "not an object"])
    assert refused.value.status == 400 and "line 2" in refused.value.detail
    with pytest.raises(APIError) as refused:
        staff_api.push_pairs([], labels_needed=0)
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "labels_needed"


def test_a_prompt_push_takes_reference_answers_and_refuses_a_bad_one_by_line(staff_api):
    from generation.models import Response

    result = staff_api.push_prompts([{"prompt": "Name a fruit.", "reference": "An apple."},
                                     {"prompt": "Name a tree.", "completion": "An oak."}])
    assert result["created"] == 2
    assert sorted(Response.objects.filter(is_reference=True).values_list("text", flat=True)) == ["An apple.", "An oak."]
    with pytest.raises(APIError) as refused:
        staff_api.push_prompts([{"prompt": "Name a bird."}, {"prompt": "Name a fish.", "reference": ""}])
    assert refused.value.status == 400 and "line 2" in refused.value.detail and "reference" in refused.value.detail
    assert not Prompt.objects.filter(text="Name a bird.").exists()


def _export_page(user, query: str) -> list[dict]:
    """The rows of the export page's job for these form fields (the form posted, its job run, its file downloaded)."""
    page = PageClient()
    page.force_login(user)
    fields = {"boxes_shown": None, "include_automatic": None, **dict(pair.split("=") for pair in query.split("&"))}
    job, response = exporting.export(page, **fields)
    assert job is not None and job.status == "succeeded"
    return [json.loads(line) for line in exporting.content(response).decode().splitlines()]


@pytest.mark.parametrize("query, filters", [
    ("include_automatic=on", {}),
    ("round=2&include_automatic=on", {"round": 2}),
    # the page's form with the judge box unticked (boxes_shown: the page sent its boxes; a bare link includes judges)
    ("min_agreement=0.6&soft_labels=on&boxes_shown=1",
     {"min_agreement": 0.6, "soft_labels": True, "include_automatic": False}),
])
def test_pull_returns_exactly_what_the_export_page_returns(staff_api, staff, query, filters):
    two, three = make_round(2), make_round(3)
    chat = make_prompt(messages=[{"role": "user", "content": "Hi"}], text="Hi")
    pairs = [make_pair(round=two, labels_needed=3) for _ in range(7)] + [make_pair(chat, round=three)]
    pairs += [make_pair(make_prompt(split=Prompt.EVAL), round=two)]  # on an eval prompt: never exported
    for i, pair in enumerate(pairs):
        for j in range(pair.labels_needed):
            label_pair(pair.pk, make_user(), "left" if (i + j) % 3 else "right", strength="slight" if j else None)
    automatic = make_user("a-judge")
    AnnotatorProfile.objects.create(user=automatic, is_automatic=True)
    label_pair(make_pair(round=two).pk, automatic, "left")
    expected = _export_page(staff, query)
    assert expected, "the case must export something"
    assert staff_api.preferences(page_size=2, **filters) == expected


def test_pull_pages_and_refuses_junk_filters(staff_api):
    for _ in range(5):
        label_pair(make_pair().pk, make_user(), "left")
    first = staff_api.get("/preferences", page=1, page_size=2)
    last = staff_api.get("/preferences", page=3, page_size=2)
    assert (first["count"], first["next_page"], len(first["results"])) == (5, 2, 2)
    assert (last["next_page"], len(last["results"])) == (None, 1)
    for junk in ({"page": 0}, {"page_size": 5000}, {"min_agreement": "nan"}, {"round": -1}, {"round": 2**63}):
        with pytest.raises(APIError) as refused:
            staff_api.get("/preferences", **junk)
        assert refused.value.status == 400 and repr(next(iter(junk)))[1:-1] in refused.value.detail


@pytest.mark.parametrize("path,rows,field", [
    ("/pairs", [{"prompt": "Q", "response_a": "A", "response_b": "B"},
                {"prompt": "Q2", "response_a": "A", "response_b": "B", "round": 5}], "round"),
    ("/pairs", [{"prompt": "Q", "response_a": "A", "response_b": "B", "labels_needed": 3}], "labels_needed"),
    ("/prompts", [{"prompt": "Q"}, {"prompt": "Q2", "tag": "maths"}], "tag"),
])
def test_a_setting_of_the_whole_push_given_in_a_row_is_refused_by_row_not_dropped(staff_api, path, rows, field):
    with pytest.raises(APIError) as refused:
        staff_api.post(path, {"rows": rows})
    line = len(rows)
    assert refused.value.status == 400 and f"line {line}: {field}: set for the whole request" in refused.value.detail
    assert not Pair.objects.exists() and not Prompt.objects.exists()


def test_pulling_page_after_page_misses_no_row_when_a_label_is_undone_meanwhile(staff_api):
    """Pages counted by offset: a label undone on page 1 while a pipeline pulled moved a row of page 2 onto page 1,
    and the pipeline never saw it. The client pages by the last pair id seen (`after`)."""
    from annotate.services import undo_last_label

    people = [make_user() for _ in range(5)]
    pairs = [make_pair() for _ in people]
    for person, pair in zip(people, pairs, strict=True):
        label_pair(pair.pk, person, "left")
    first = staff_api.get("/preferences", page_size=2)
    assert first["next_after"] == pairs[1].pk
    assert undo_last_label(people[0]) is not None  # the first row is gone
    second = staff_api.get("/preferences", page_size=2, after=first["next_after"])
    third = staff_api.get("/preferences", page_size=2, after=second["next_after"])
    prompts = [row["prompt"] for row in first["results"] + second["results"] + third["results"]]
    assert prompts == [p.prompt.text for p in pairs]  # pairs[2] is still there, after the undo
    assert third["next_after"] is None and third["count"] == 4
    by_offset = staff_api.get("/preferences", page=2, page_size=2)["results"]
    assert [row["prompt"] for row in by_offset] == [pairs[3].prompt.text, pairs[4].prompt.text]  # what offsets do
    assert [row["prompt"] for row in staff_api.preferences(page_size=2)] == [p.prompt.text for p in pairs[1:]]
    with pytest.raises(APIError) as refused:
        staff_api.get("/preferences", page=2, after=1)
    assert refused.value.status == 400 and "page and after" in refused.value.detail


def test_a_preference_on_a_pair_pushed_unlabelled_is_recorded_on_it_not_dropped(staff_api):
    """Pairs pushed to be labelled elsewhere, then their labels pushed back: each label lands on its pair (either
    way round), once; the push said "skipped" and kept no label before."""
    staff_api.push_pairs([{"prompt": "Q1", "response_a": "A1", "response_b": "B1"},
                          {"prompt": "Q2", "response_a": "A2", "response_b": "B2"}], labels_needed=1)
    result = staff_api.push_preferences([{"prompt": "Q1", "chosen": "A1", "rejected": "B1"},
                                         {"prompt": "Q2", "chosen": "B2", "rejected": "A2"}])
    assert result == {"created": 2, "skipped": 0, "set_aside": [], "disagreeing": [], "same_answers": [], "held_back": []}
    assert Pair.objects.count() == 2  # no second pair of the same answers
    first, second = Pair.objects.order_by("pk")
    assert [(lb.pair, lb.choice) for lb in Label.objects.order_by("pair_id")] == [(first, "a"), (second, "b")]
    assert first.__class__.objects.get(pk=first.pk).labels_done == 1
    assert [(r["chosen"], r["rejected"]) for r in staff_api.preferences()] == [("A1", "B1"), ("B2", "A2")]
    again = staff_api.push_preferences([{"prompt": "Q2", "chosen": "B2", "rejected": "A2"}])
    assert again["created"] == 0 and again["skipped"] == 1 and Label.objects.count() == 2
    turned = staff_api.push_preferences([{"prompt": "Q1", "chosen": "A1", "rejected": "B1"},
                                         {"prompt": "Q2", "chosen": "A2", "rejected": "B2"}])
    # row 2 prefers the other
    assert turned == {"created": 0, "skipped": 1, "set_aside": [], "disagreeing": [2], "same_answers": [], "held_back": []}
    assert [lb.choice for lb in Label.objects.order_by("pair_id")] == ["a", "b"]  # the stored labels are kept


def test_rows_whose_two_answers_are_one_text_are_not_added_and_are_named(staff_api, annotator):
    """Pushed pairs and preferences with chosen == rejected were stored, shown to annotators (who could only press
    tie), and pulled back as training rows that teach nothing."""
    pushed = staff_api.push_pairs([{"prompt": "Q1", "response_a": "Same answer.", "response_b": "Same answer."},
                                   {"prompt": "Q2", "response_a": "Yes.", "response_b": "No."}])
    assert pushed == {"created": 1, "skipped": 0, "set_aside": [], "disagreeing": [], "same_answers": [1], "held_back": []}
    labelled = staff_api.push_preferences([{"prompt": "Q3", "chosen": "Same.", "rejected": "Same."},
                                           {"prompt": "Q4", "chosen": "Good.", "rejected": "Bad."}])
    assert labelled["created"] == 1 and labelled["same_answers"] == [1]
    assert not Pair.objects.filter(prompt__text__in=["Q1", "Q3"]).exists()
    assert not Prompt.objects.filter(text__in=["Q1", "Q3"]).exists()  # nor their prompts, which would be sampled
    # a pair of one text already stored (made before this check, or by hand) is not pulled nor exported either
    label_pair(make_pair(text_a="One text.", text_b="One text.").pk, annotator, "left")
    assert [r["prompt"] for r in staff_api.preferences()] == ["Q4"]


def test_every_page_of_a_pull_has_the_first_pages_shape(staff_api, annotator):
    """Whether rows are message lists was decided on every request over all decided pairs: a chat prompt labelled
    between two pages turned the later pages' rows into message lists, and the client joined both shapes."""
    for k in range(3):
        label_pair(make_pair(prompt=make_prompt(text=f"text prompt {k}")).pk, annotator, "left")
    first = staff_api.get("/preferences", page_size=2)
    assert first["conversational"] is False and isinstance(first["results"][0]["prompt"], str)
    chat = make_prompt(text="a chat", messages=[{"role": "user", "content": "a chat"}])
    label_pair(make_pair(prompt=chat).pk, annotator, "left")
    second = staff_api.get("/preferences", page_size=2, after=first["next_after"], conversational=False)
    assert [type(r["prompt"]) for r in second["results"]] == [str, str]
    assert staff_api.get("/preferences")["conversational"] is True  # a new pull: every row a message list


def test_the_client_pulls_every_page_in_the_first_pages_shape(staff_api, annotator):
    for k in range(3):
        label_pair(make_pair(prompt=make_prompt(text=f"text prompt {k}")).pk, annotator, "left")
    real, pages = staff_api.get, []

    def a_chat_is_labelled_after_the_first_page(path, **query):
        answer = real(path, **query)
        pages.append(query)
        if len(pages) == 1:
            chat = make_prompt(text="a chat", messages=[{"role": "user", "content": "a chat"}])
            label_pair(make_pair(prompt=chat).pk, annotator, "left")
        return answer

    staff_api.get = a_chat_is_labelled_after_the_first_page
    pulled = staff_api.preferences(page_size=2)
    assert len(pulled) == 4 and {type(r["prompt"]) for r in pulled} == {str}
    assert pages[1]["conversational"] is False


def test_a_count_in_a_request_body_is_a_number_not_true(staff_api):
    """`labels_needed: true` was stored as 1 (pydantic reads true as 1)."""
    for body in ({"rows": [], "labels_needed": True},):
        with pytest.raises(APIError) as refused:
            staff_api.post("/pairs", body)
        assert refused.value.status == 400 and refused.value.errors[0]["field"] == "labels_needed"
    with pytest.raises(APIError) as refused:
        staff_api.post("/jobs/loop", {"rounds": True, "pairs": 4, "judge": "judges.rules:length_target"})
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "rounds"
    staff_api.create_round(9)
    with pytest.raises(APIError) as refused:  # stored as 1.0, it made every pair served a gold pair
        staff_api.change_round(9, gold_rate=True)
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "gold_rate"


def test_a_query_parameter_the_operation_does_not_take_is_refused_by_name(staff_api):
    """`?roud=1` (a typo of round) answered every round's rows, and a pipeline pulling round 1 trained on them all;
    the same went for the jobs list and the leaderboard."""
    staff_api.push_preferences([{"prompt": "q", "chosen": "a", "rejected": "b"}], round=1)
    staff_api.push_preferences([{"prompt": "r", "chosen": "a", "rejected": "b"}], round=2)
    assert staff_api.get("/preferences", round=1)["count"] == 1
    for path, query in (("/preferences", {"roud": 1}), ("/jobs", {"kind": "training", "knd": "x"}),
                        ("/leaderboard", {"automatc": 1})):
        with pytest.raises(APIError) as refused:
            staff_api.get(path, **query)
        stray = next(name for name in query if name != "kind")
        assert refused.value.status == 400 and refused.value.detail.startswith(
            f"{stray}: not a query parameter of this operation"), (path, refused.value.detail)
    assert staff_api.get("/leaderboard", automatic=True)["votes"] == 0  # the known ones still work


def test_a_body_that_gives_a_key_twice_is_refused(staff_api):
    """{"rows": [...], "rows": []} answered "no rows": json kept the last value without a word."""
    with pytest.raises(APIError) as refused:
        staff_api.request("POST", "/preferences", content=(
            b'{"rows": [{"prompt": "q", "chosen": "a", "rejected": "b"}], "rows": []}', "application/json"))
    assert refused.value.status == 400 and "the key 'rows' is given twice" in refused.value.detail
    assert not Pair.objects.exists()
