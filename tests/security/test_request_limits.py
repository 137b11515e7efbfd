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


def _multipart(fields: dict[str, str]) -> bytes:
    parts = [f'--XX\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    return b"".join(parts) + b"--XX--\r\n"


@pytest.mark.parametrize("charset", ["base64", "rot13", "idna", "utf-16", "unicode_escape"])
def test_a_charset_that_is_no_character_set_is_refused_not_a_500(charset, staff):
    """Django decodes a form with the charset its Content-Type names: base64 and rot13 (no text encodings) and idna
    failed as the form was read, before sign-in, with a 500 and a traceback logged per request (an outside probe)."""
    anonymous = Client(raise_request_exception=False)
    kind = f"multipart/form-data; boundary=XX; charset={charset}"
    page = anonymous.generic("POST", "/accounts/login/", _multipart({"username": "a", "password": "b"}),
                             content_type=kind)
    assert page.status_code == 400 and f"charset '{charset}'" in page.content.decode()
    from api.tokens import create_token

    api = anonymous.generic("POST", "/api/v1/jobs/import", _multipart({"kind": "prompts"}), content_type=kind,
                            HTTP_AUTHORIZATION="Bearer " + create_token(staff, "t")[1])
    assert api.status_code == 400 and "not a character set" in api.json()["detail"]



@pytest.mark.parametrize("charset", ["base64", "idna", '"utf\x00"'])
def test_a_query_sent_with_such_a_charset_is_refused_by_the_servers_handler(charset):
    """Django decodes the query string with the request's charset as it builds the request, before any middleware:
    a GET with a query and this Content-Type was a 500 from the WSGI handler itself."""
    import io

    from django.test.client import FakePayload

    from prefloop.wsgi import application

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/accounts/login/", "QUERY_STRING": "next=/annotate/",
               "CONTENT_TYPE": f"text/plain; charset={charset}", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "wsgi.input": FakePayload(b""), "wsgi.errors": io.StringIO()}
    said = {}
    body = b"".join(application(environ, lambda status, headers, *_: said.update(status=status)))
    assert said["status"].startswith("400") and b"not a character set" in body


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", "iso-8859-1", "windows-1252", "no-such-charset"])
def test_a_character_set_or_an_unknown_name_reads_as_before(charset):
    response = Client().generic("POST", "/accounts/login/", _multipart({"username": "a", "password": "b"}),
                                content_type=f"multipart/form-data; boundary=XX; charset={charset}")
    assert response.status_code == 200 and b"Log in" in response.content  # the form again: a wrong password
