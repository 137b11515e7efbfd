"""The checks every request passes before sign-in (prefloop.request_limits) take time linear in what it carries.

An outside probe found one anonymous POST that held a worker for seconds to hours: the JSON-string pattern behind the
nesting check rescanned to the end of a value from every quote of `["\\"\\"\\...` (32 KB: 4.6 s; 5 MB: hours), and the
4,301-digit pattern rescanned every run of 4,300 digits from each of its digits (5 MB: about a minute). Each attack
below is sent to the sign-in page as its username; each would run past the test's timeout before the fix."""
import time

import pytest
from django.test import Client

from prefloop.request_limits import MAX_NESTING, unusable

pytestmark = pytest.mark.django_db

BODY = 4_500_000  # under DATA_UPLOAD_MAX_MEMORY_SIZE (5 MB), so Django reads the form and the checks run


def _post_login(username: str):
    started = time.perf_counter()
    response = Client().post("/accounts/login/", {"username": username, "password": "x"})
    return response, time.perf_counter() - started


@pytest.mark.timeout(60)
def test_unterminated_json_strings_cost_one_pass():
    attack = "[" + '"\\' * (BODY // 2)
    response, _ = _post_login(attack)
    assert response.status_code == 200  # the sign-in form again: a wrong username, not a refusal
    assert b"Log in" in response.content


@pytest.mark.timeout(60)
def test_runs_of_4300_digits_cost_one_pass():
    attack = ("1" * 4300 + "x") * (BODY // 4301)
    response, _ = _post_login(attack)
    assert response.status_code == 200


@pytest.mark.timeout(60)
def test_the_checks_still_refuse_what_they_refused():
    response, _ = _post_login("x" + "1" * 4301)
    assert response.status_code == 400 and b"more than 4,300 digits" in response.content
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    response, _ = _post_login(deep)
    assert response.status_code == 400 and b"nested more than 64 levels deep" in response.content


@pytest.mark.parametrize(("value", "refused"), [
    ("[" * 65, True),
    ("[" * 64 + "]" * 64, False),
    ('["' + "[" * 100 + '"]', False),  # brackets inside a JSON string do not nest
    ('["a\\"' + "[" * 100 + '"]', False),  # nor after an escaped quote inside it
    ('["a\\\n' + "[" * 100 + '"]', False),  # nor after an escaped line break
    ('"a" ' + "[" * 65, True),  # a closed string before the brackets does not hide them
    ('"' + "[" * 65, False),  # an unterminated string holds the rest: no JSON parser reads on
])
def test_nesting_is_counted_outside_json_strings(value, refused):
    assert (unusable("field", value) is not None) is refused
