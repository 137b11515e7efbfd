"""Found by an outside review of the API against docs/api.md: a comparison set sent again with its settings spelled
another way started a second set, a pull of a round no one made was an empty 200, and a pushed row giving a key twice
was refused without naming the row."""
from __future__ import annotations

import json

import pytest
from django.test import Client

from annotate.models import Label
from api.tokens import create_token

pytestmark = pytest.mark.django_db


def _client(user):
    return Client(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'review')[1]}")


def _post(c, path, body=None, raw=None):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return c.post("/api/v1" + path, data=data, content_type="application/json")


def test_a_comparison_set_spelled_another_way_is_the_same_set(staff, tiny_model_dir, monkeypatch):
    from compare.models import CompareJob
    from generation import services as gs
    from generation.models import Prompt
    from jobs import lifecycle

    monkeypatch.setattr(lifecycle, "enqueue", lambda job: None)
    base = gs.register_version("base", tiny_model_dir)
    other = gs.register_version("round-1", tiny_model_dir, parent=base)
    for k in range(3):
        Prompt.objects.create(text=f"Which is better {k}?", split=Prompt.EVAL)
    c = _client(staff)
    body = {"version_a": base.pk, "version_b": other.pk, "limit": 2}
    first = _post(c, "/jobs/compare", {**body, "sampling": {"temperature": 0.5}})
    assert first.status_code == 201
    again = _post(c, "/jobs/compare", {**body, "sampling": {"temperature": "0.5"}})
    assert again.status_code == 409 and again.json()["job"]["id"] == first.json()["id"]
    judged = _post(c, "/jobs/compare", {**body, "judge": "judges.rules:longer_text"})
    assert judged.status_code == 201
    assert _post(c, "/jobs/compare", {**body, "judge": "judges.rules.longer_text"}).status_code == 409
    plain = _post(c, "/jobs/compare", body)
    assert plain.status_code == 201
    assert _post(c, "/jobs/compare", {**body, "sampling": {"temperature": 0.8}}).status_code == 409  # the default
    assert CompareJob.objects.filter(status="queued").count() == 3
    # the judge is kept under its one spelling, as its votes and the gate's sources name it
    assert CompareJob.objects.get(pk=judged.json()["id"]).params["judge"] == "judges.rules:longer_text"


def test_a_pull_of_a_round_no_one_made_is_refused_by_name(staff):
    c = _client(staff)
    pushed = _post(c, "/preferences", {"rows": [{"prompt": "q?", "chosen": "a", "rejected": "b"}], "round": 1})
    assert pushed.status_code == 201
    assert c.get("/api/v1/preferences?round=1").json()["count"] == 1
    missing = c.get("/api/v1/preferences?round=2")
    assert missing.status_code == 404 and "no labelling round 2" in missing.json()["detail"]


def test_a_pushed_row_giving_a_key_twice_is_named_by_its_line(staff):
    c = _client(staff)
    r = _post(c, "/preferences", raw='{"rows": [{"prompt": "a?", "chosen": "x", "rejected": "y"}, '
                                     '{"prompt": "b?", "chosen": "x", "meta": {"k": 1, "k": 2}, "rejected": "y"}]}')
    assert r.status_code == 400
    assert r.json()["problems"] == ["api: line 2: field 'k': given twice in one object: which value is meant cannot "
                                    "be told"]
    assert not Label.objects.exists()  # nothing stored
    outside = _post(c, "/preferences", raw='{"rows": [], "rows": []}')  # outside the rows: the body is refused
    assert outside.status_code == 400 and "'rows' is given twice" in outside.json()["detail"]


def test_a_key_given_twice_outside_a_pushs_rows_is_named_as_the_bodys(staff):
    c = _client(staff)
    not_a_push = _post(c, "/label/submit", raw='{"lease": 1, "side": "left", "rows": [{"k": 1, "k": 2}]}')
    assert not_a_push.status_code == 400 and "problems" not in not_a_push.json()
    assert not_a_push.json()["detail"].startswith("the request body is refused: the key 'k' is given twice")
    both = _post(c, "/preferences", raw='{"round": 1, "round": 2, "rows": [{"k": 1, "k": 2}]}')
    assert both.status_code == 400 and "'round' is given twice" in both.json()["detail"]
