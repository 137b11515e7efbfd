"""What an outside fuzz audit found answering 500 (or a false 503), each now refused with a sentence naming the field
or parameter and what is wrong with it:

- a prompt's chat typed in the admin that is no chat ([1, 2], a content that is a number) was stored, and the label
  page and POST /api/v1/label/next failed for every annotator that pair was served to;
- NaN, Infinity or 1e309 in an admin JSON field (Python's json reads them; they are not JSON) failed the database's
  JSON check on saving, and an empty sampling-settings field failed its NOT NULL;
- a whole number past 64 bits that int() reads but is not bare digits (" 9223372036854775808",
  "9_223_372_036_854_775_808", an item of `id__in=1,...`) failed with OverflowError in the admin's filters and forms,
  and `created__year= 99999` with "year is out of range";
- `?id__regex=(` failed inside SQLite's REGEXP and was answered 503 "the database is not answering", for ever.
"""
from __future__ import annotations

import pytest
from django.db import DatabaseError, OperationalError, connection, transaction
from django.test import Client, RequestFactory

from generation.models import Prompt, Response
from prefloop import dbfaults
from tests.annotate.factories import make_pair, make_prompt
from tests.compare.conftest import make_version
from training.models import TrainingRun

from .urlwalk import page_inputs

pytestmark = pytest.mark.django_db

BIG = "9223372036854775808"  # 2**63: one past the largest 64-bit integer


def _staff_client(staff) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    return client


def _post_change(client, url: str, obj, **changes):
    """The admin's change form of obj as shown (its text too: page_inputs reads no textarea), with changes."""
    fields = {**dict(page_inputs(client.get(url).content.decode()).values), "text": obj.text, **changes}
    fields.pop("_continue", None), fields.pop("_addanother", None)
    return client.post(url, fields)


# -- 1. a prompt's chat ---------------------------------------------------------------------------------------------

NOT_A_CHAT = {
    "content a number": ('[{"role": "user", "content": 5}]', "message 1 content must be text"),
    "a list of numbers": ("[1, 2]", "message 1 must be an object with &#x27;role&#x27; and &#x27;content&#x27;"),
    "an object": ('{"x": 1}', "expected a non-empty list of {role, content} messages, got an object"),
    "text": ('"str"', "expected a non-empty list of {role, content} messages, got text"),
    "no content": ('[{"role": "user"}]', "message 1 must be an object with &#x27;role&#x27; and &#x27;content&#x27;"),
    "ends with the assistant": ('[{"role": "assistant", "content": "x"}]', "a chat prompt must end with a user message"),
    "empty": ("[]", "expected a non-empty list of {role, content} messages"),
}


@pytest.mark.parametrize("case", NOT_A_CHAT)
def test_a_prompt_chat_the_importers_would_refuse_is_refused_in_the_admin_and_the_label_page_still_answers(
        staff, annotator, case):
    typed, error = NOT_A_CHAT[case]
    prompt = make_prompt()  # not yet answered nor paired: one that is keeps its chat (generation.admin.PromptAdmin)
    before = Prompt.objects.filter(pk=prompt.pk).values().get()
    client = _staff_client(staff)
    response = _post_change(client, f"/admin/generation/prompt/{prompt.pk}/change/", prompt, messages=typed)
    assert response.status_code == 200, case
    page = response.content.decode()
    assert error in page and list(response.context["adminform"].form.errors) == ["messages"], case
    assert Prompt.objects.filter(pk=prompt.pk).values().get() == before

    make_pair(prompt)
    labeller = Client(raise_request_exception=False)
    labeller.force_login(annotator)
    assert labeller.get("/annotate/").status_code == 200
    assert labeller.post("/api/v1/label/next", "{}", content_type="application/json").status_code != 500


def test_a_real_chat_is_still_taken_in_the_admin(staff):
    prompt = make_prompt()
    chat = '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]'
    response = _post_change(_staff_client(staff), f"/admin/generation/prompt/{prompt.pk}/change/", prompt,
                            messages=chat)
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.messages[-1] == {"role": "user", "content": "Hi?"}


def test_a_chat_stored_malformed_before_the_check_is_shown_as_the_prompt_text():
    prompt = make_pair().prompt
    for stored in ([1, 2], {"x": 1}, [{"role": "user", "content": 5}], "str", None, []):
        Prompt.objects.filter(pk=prompt.pk).update(messages=stored)
        prompt.refresh_from_db()
        assert prompt.chat == [{"role": "user", "content": prompt.text}], stored
    Prompt.objects.filter(pk=prompt.pk).update(messages=[{"role": "user", "content": "Hi?", "extra": 1}])
    prompt.refresh_from_db()
    assert prompt.chat == [{"role": "user", "content": "Hi?"}]


# -- 2. numbers JSON has no words for; an empty sampling-settings field ----------------------------------------------

NOT_JSON = {
    "NaN": ("NaN", "NaN is not JSON"),
    "Infinity": ("Infinity", "Infinity is not JSON"),
    "-Infinity nested": ('[{"role": "user", "content": "x", "w": -Infinity}]', "-Infinity is not JSON"),
    "1e309": ("1e309", "1e309 is too large for a number"),
    "-1e309 in a list": ("[-1e309]", "-1e309 is too large for a number"),
}


@pytest.mark.parametrize("case", NOT_JSON)
def test_a_number_json_has_no_words_for_is_refused_on_every_admin_json_field(staff, case):
    typed, error = NOT_JSON[case]
    prompt = make_prompt()  # neither answered nor in a pair: those keep their fields (generation.admin)
    answer = Response.objects.create(prompt=make_prompt(), text="An answer", source="test")
    client = _staff_client(staff)
    for url, field, obj in [(f"/admin/generation/prompt/{prompt.pk}/change/", "messages", prompt),
                            (f"/admin/generation/response/{answer.pk}/change/", "sampling_params", answer),
                            (f"/admin/generation/response/{answer.pk}/change/", "token_ids", answer)]:
        before = type(obj).objects.filter(pk=obj.pk).values().get()
        response = _post_change(client, url, obj, **{field: typed})
        assert response.status_code == 200 and error in response.content.decode(), (url, field)
        assert type(obj).objects.filter(pk=obj.pk).values().get() == before

    base = make_version("base", is_current=True)
    params = f'{{"beta": {typed}}}' if not typed.startswith("[") else typed
    response = client.post("/admin/training/trainingrun/add/", {
        "input_version": base.pk, "reference_choice": "start", "data_choice": "all", "params": params})
    assert response.status_code == 200 and error in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("typed", ["", "null"])
def test_an_empty_sampling_settings_field_means_no_settings(staff, typed):
    answer = Response.objects.create(prompt=make_prompt(), text="An answer", source="test")  # in no pair
    response = _post_change(_staff_client(staff), f"/admin/generation/response/{answer.pk}/change/", answer,
                            sampling_params=typed)
    assert response.status_code == 302
    answer.refresh_from_db()
    assert answer.sampling_params == {}


def test_sampling_settings_that_are_no_object_are_refused(staff):
    answer = Response.objects.create(prompt=make_prompt(), text="An answer", source="test")  # in no pair
    response = _post_change(_staff_client(staff), f"/admin/generation/response/{answer.pk}/change/", answer,
                            sampling_params="[1]")
    assert response.status_code == 200
    assert "expected a JSON object of settings by name" in response.content.decode()
    assert Response.objects.get(pk=answer.pk).sampling_params == {}


# -- 3. whole numbers past 64 bits as int() reads them; years no date holds ------------------------------------------

OVER_64_BITS = [
    ("id", f"%20{BIG}"),
    ("id", "9_223_372_036_854_775_808"),
    ("id__in", f"1,{BIG}"),
    ("id__in", f"1,%20{BIG}"),
    ("id__range", f"1,{BIG}"),
]


@pytest.mark.parametrize(("name", "value"), OVER_64_BITS)
def test_an_admin_filter_on_a_number_past_64_bits_is_refused_naming_it(staff, name, value):
    make_pair()
    response = _staff_client(staff).get(f"/admin/generation/prompt/?{name}={value}")
    assert response.status_code == 400
    assert f"The query parameter '{name}'" in response.content.decode()
    assert "beyond 64 bits" in response.content.decode()


def test_an_admin_form_with_a_choice_past_64_bits_is_refused(staff):
    response = _staff_client(staff).post("/admin/auth/group/add/", {"name": "g1", "permissions": f" {BIG}"})
    assert response.status_code == 400 and b"'permissions'" in response.content


@pytest.mark.parametrize("query", ["created__year=%2099999", "created__year=%2B99999", "created__year=0",
                                   "created__year__gt=10000"])
def test_an_admin_filter_on_a_year_no_date_holds_is_refused(staff, query):
    make_pair()
    response = _staff_client(staff).get(f"/admin/generation/prompt/?{query}")
    assert response.status_code == 400 and b"is not a year" in response.content, query


@pytest.mark.parametrize("query", ["id__in=1,2", "id=%201", "created__year=2024", "created__year__gte=1",
                                   "id__regex=%5E1", "text__iregex=prompt"])
def test_ordinary_admin_filters_still_answer(staff, query):
    make_pair()
    assert _staff_client(staff).get(f"/admin/generation/prompt/?{query}").status_code == 200, query


# -- 4. a regular expression SQLite's REGEXP cannot run -------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("id__regex", "("), ("text__iregex", "a)"), ("text__regex", "(" * 5000),
                                             ("text__regex", "a" * 10_001)])
def test_an_admin_filter_on_a_bad_regular_expression_is_refused_naming_it_not_answered_as_an_outage(
        staff, name, value):
    make_pair()
    response = _staff_client(staff).get(f"/admin/generation/prompt/?{name}={value}")
    assert response.status_code == 400, response.status_code
    text = response.content.decode()
    if connection.vendor == "sqlite" or len(value) > 10_000:  # the request limits (SQLite runs Python's re)
        assert f"The query parameter '{name}'" in text and "regular expression" in text
    else:  # PostgreSQL reads the pattern itself: its refusal (a DataError) names it
        assert "The database refused a value this request sent (invalid regular expression" in text


def test_a_query_the_database_could_not_run_is_no_outage():
    make_pair()
    with pytest.raises(DatabaseError) as caught:  # SQLite: OperationalError; PostgreSQL: DataError
        with transaction.atomic():
            list(Prompt.objects.filter(text__regex="("))  # past the request limits: the database layer itself
    assert not dbfaults.is_outage(caught.value)
    request = RequestFactory().get("/annotate/")
    answer = dbfaults.DatabaseFaultMiddleware(lambda r: None).process_exception(request, caught.value)
    # SQLite: the error it is (a 500, logged); PostgreSQL: a value the database refused (a 400)
    assert answer is None if connection.vendor == "sqlite" else answer.status_code == 400
    # what the fault tests break (a database that cannot be opened) is still one
    assert dbfaults.is_outage(OperationalError("unable to open database file"))


@pytest.mark.parametrize("stored", [[1, 2], [{"role": "user", "content": 5}], {"x": 1}])
def test_a_chat_stored_malformed_before_the_check_is_served_as_its_text(annotator, stored):
    """Rows written before the admin checked chats (or around it): the label page and the labelling API showed the
    stored value as a chat, and failed with a 500 on it, for every annotator served the pair."""
    pair = make_pair()
    Prompt.objects.filter(pk=pair.prompt.pk).update(messages=stored)
    labeller = Client(raise_request_exception=False)
    labeller.force_login(annotator)
    page = labeller.get("/annotate/")
    assert page.status_code == 200 and pair.prompt.text in page.content.decode()
    served = labeller.post("/api/v1/label/next", "{}", content_type="application/json")
    assert served.status_code == 200
    assert served.json()["prompt"] == [{"role": "user", "content": pair.prompt.text}]


@pytest.mark.parametrize("value", ["(?P<n>a)", "a(?P<m>b)c"])
def test_a_regular_expression_python_reads_and_postgresql_does_not_is_a_400(staff, value):
    """Python's re (the request limits' check) takes named groups; PostgreSQL's regular expressions do not, and its
    DataError was a 500 in the admin's filters."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite runs REGEXP with Python's re, which the request limits check")
    make_pair()
    response = _staff_client(staff).get(f"/admin/generation/prompt/?text__regex={value}")
    assert response.status_code == 400
    assert "The database refused a value this request sent (invalid regular expression" in response.content.decode()


@pytest.mark.parametrize("value", ["(?a)(?u)x", "(?u)(?a)x"])
def test_a_regular_expression_re_refuses_with_a_value_error_is_a_400_before_sign_in(value):
    """re.compile refuses flags that exclude each other with a ValueError, not re.error: it escaped the check, a 500
    on any path for anyone, signed in or not."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only: the check runs Python's re as SQLite's REGEXP does")
    response = Client(raise_request_exception=False).get(f"/annotate/?text__regex={value}")
    assert response.status_code == 400 and b"regular expression" in response.content


def test_a_postgresql_regular_expression_is_left_to_postgresql(staff):
    """\\m and \\M (word bounds) are PostgreSQL's and not Python's: the check refused them on PostgreSQL too."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    make_pair()
    assert _staff_client(staff).get("/admin/generation/prompt/?text__regex=%5Cmprompt%5CM").status_code == 200
