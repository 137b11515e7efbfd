"""A query parameter or body field an operation does not take is refused by name (docs/api.md), on every operation:
several answered 200 and did what they would have done without it, so a typo or a wrong guess went unseen."""
from __future__ import annotations

import pytest

from prefloop_client import APIError
from tests.annotate.factories import make_pair

pytestmark = pytest.mark.django_db(transaction=True)


def _refused(call) -> str:
    with pytest.raises(APIError) as refused:
        call()
    assert refused.value.status == 400, refused.value
    return refused.value.detail


def test_stray_query_parameters_are_refused_where_an_operation_takes_none(staff_api, annotator_api):
    for path in ("/versions?x=1", "/label/progress?x=1"):
        api = annotator_api if path.startswith("/label") else staff_api
        assert "x: not a query parameter of this operation (it takes none)" in _refused(lambda api=api, path=path: api.get(path)), path
    assert isinstance(staff_api.get("/versions"), list)  # without one, as before


def test_a_query_parameter_given_twice_is_refused_not_one_of_them_kept(staff_api):
    """`?round=1&round=2` answered round 2's rows alone."""
    assert "round: given 2 times" in _refused(lambda: staff_api.get("/preferences?round=1&round=2"))
    assert "automatic: given 2 times" in _refused(lambda: staff_api.get("/leaderboard?automatic=1&automatic=0"))


def test_a_body_sent_to_an_operation_that_takes_none_is_refused(annotator_api):
    """`POST /label/next {"pair": 5}` leased the queue's own pair, as if the one asked for were not there."""
    make_pair()
    assert "pair" in _refused(lambda: annotator_api.post("/label/next", {"pair": 5}))
    assert annotator_api.post("/label/next", {})["lease"]  # no body, or an empty one, as before
