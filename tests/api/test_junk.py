"""Junk in every parameter of every API operation, as staff and as an annotator, over real HTTP: a JSON refusal,
never a 500. Operations and their fields come from the OpenAPI schema, so an endpoint added later is walked too."""
from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from annotate.models import Label
from generation.models import ModelVersion, Prompt
from tests.annotate.factories import make_pair, make_round, make_user
from training.models import TrainingRun

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)

VALUES = [-1, 0, 2**31, 2**63, 10**30, 1e308, -1.5, True, None, "", "abc", "nan", "-inf", "a\x00b", "\ud800",
          "x" * 20_000, [], [1, "a"], {}, {"a": {"b": None}}, [{"prompt": None}]]
BODIES = ["", "{", "[]", "null", "1" * 5000, "[" * 20_000 + "]" * 20_000, '{"rows": ' + "[" * 5000 + "]" * 5000 + "}",
          '"\\ud800"', "\x00", "{}"]
PATH_VALUES = ["0", "1", str(2**63), "9" * 40, "abc", "a%00b", "%ED%A0%80", "training", "-1"]


def _world() -> None:
    base = ModelVersion.objects.create(name="junk-base", path="/nonexistent", is_current=True)
    Prompt.objects.create(text="junk walk eval prompt", split=Prompt.EVAL)
    pair = make_pair()
    make_pair(round=make_round(1))
    Label.objects.create(pair=pair, annotator=make_user(), choice="a", side="left", left_is_a=True)
    TrainingRun.objects.create(input_version=base, reference_version=base, status=TrainingRun.FAILED)


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    out = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            out.append((method.upper(), path, op))
    return out


def _paths(path: str) -> list[str]:
    if "{" not in path:
        return [path]
    return [re.sub(r"\{\w+\}", value, path) for value in PATH_VALUES]


def _body_fields(op: dict, schema: dict) -> list[str]:
    ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if not ref:
        return []
    return list(schema["components"]["schemas"][ref.rsplit("/", 1)[1]].get("properties", {}))


def _check(answer, what: str, failures: list[str]) -> None:
    if answer.status >= 500 or "json" not in answer.headers.get("Content-Type", ""):
        failures.append(f"{what}: {answer.status} {answer.headers.get('Content-Type')}")


@pytest.mark.slow
@pytest.mark.parametrize("who", ["staff", "annotator"])
def test_junk_in_every_api_parameter_is_refused_without_a_500(live_server, request, who, token_for):
    from api.main import api

    _world()
    user = request.getfixturevalue(who)
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    schema = api.get_openapi_schema()
    failures: list[str] = []
    for method, path, op in _operations(schema):
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        fields = _body_fields(op, schema)
        for concrete in _paths(path):
            url = live_server.url + concrete
            _check(http(method, url, headers=headers), f"{method} {concrete}", failures)
        url = live_server.url + _paths(path)[1 if "{" in path else 0]
        for name in params:
            for value in VALUES:
                text = value if isinstance(value, str) else json.dumps(value)
                query = f"{name}={quote(text, safe='', errors='surrogatepass')}"
                _check(http(method, f"{url}?{query}", headers=headers), f"{method} {path}?{name}={text[:20]!r}",
                       failures)
        if method not in ("POST", "PATCH"):
            continue
        for body in BODIES:
            _check(http(method, url, body, headers=headers), f"{method} {path} body {body[:20]!r}", failures)
        for name in fields:
            for value in VALUES:
                body = json.dumps({name: value})
                _check(http(method, url, body, headers=headers), f"{method} {path} {name}={value!r:.20}", failures)
    assert not failures, "\n".join(failures[:30])
