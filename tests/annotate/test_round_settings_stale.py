"""A round's settings page (or its admin page) opened before someone else changed the round, then saved for another
field: only what this person changed is written, not the page's old values over the other person's."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from annotate.models import LabellingRound, Pair

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


class _Form(HTMLParser):
    """The values a browser would send from the form with this id: inputs, textareas and selected options."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside, self.values = form_id, False, {}
        self._textarea = self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and a.get("type") not in ("submit", "checkbox") and "name" in a:
            self.values[a["name"]] = a.get("value") or ""
        elif tag == "input" and a.get("type") == "checkbox" and "checked" in a:
            self.values[a["name"]] = a.get("value") or "on"
        elif tag == "textarea":
            self._textarea = a["name"]
            self.values[self._textarea] = ""
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data.removeprefix("\n") if not self.values[self._textarea] else data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None
        elif tag == "form":
            self.inside = False


def _shown(client, url: str, form_id: str) -> dict:
    parser = _Form(form_id)
    parser.feed(client.get(url).content.decode())
    assert parser.values, f"no form {form_id!r} on {url}"
    return parser.values


@pytest.fixture
def staff_pages(client):
    client.force_login(make_user("st", is_staff=True, is_superuser=True))
    return client


def test_a_page_opened_before_anothers_overlap_change_saves_its_guidelines_alone(staff_pages):
    round_ = make_round(number=8, labels_per_pair=1)
    pair = make_pair(round=round_, labels_needed=1)
    url = "/annotate/rounds/8/"
    old_page = _shown(staff_pages, url, "round-settings")  # A opens the page: overlap 1
    assert old_page["initial-labels_per_pair"] == "1"
    assert staff_pages.post(url, {**_shown(staff_pages, url, "round-settings"), "labels_per_pair": "3"}).status_code == 302
    assert Pair.objects.get(pk=pair.pk).labels_needed == 3  # B raised it

    assert staff_pages.post(url, {**old_page, "guidelines": "Prefer the shorter answer."}).status_code == 302
    stored = LabellingRound.objects.get(pk=round_.pk)
    assert (stored.labels_per_pair, stored.guidelines) == (3, "Prefer the shorter answer.")
    assert Pair.objects.get(pk=pair.pk).labels_needed == 3

    # the old page changing the overlap itself still steps the pairs, from what is stored now
    assert staff_pages.post(url, {**old_page, "labels_per_pair": "2"}).status_code == 302
    assert LabellingRound.objects.get(pk=round_.pk).labels_per_pair == 2
    assert Pair.objects.get(pk=pair.pk).labels_needed == 2


def test_a_refused_save_shown_again_still_saves_what_was_changed(staff_pages):
    make_round(number=4, labels_per_pair=1)
    url = "/annotate/rounds/4/"
    page = _shown(staff_pages, url, "round-settings")
    refused = staff_pages.post(url, {**page, "labels_per_pair": "2", "gold_rate": "5"})
    assert refused.status_code == 400
    parser = _Form("round-settings")
    parser.feed(refused.content.decode())
    again = parser.values
    assert again["labels_per_pair"] == "2" and again["initial-labels_per_pair"] == "1"
    assert staff_pages.post(url, {**again, "gold_rate": "0.1"}).status_code == 302
    stored = LabellingRound.objects.get(number=4)
    assert (stored.labels_per_pair, stored.gold_rate) == (2, 0.1)


def test_the_admin_change_page_leaves_anothers_overlap_change_alone(staff_pages):
    round_ = make_round(number=6, labels_per_pair=1)
    pair = make_pair(round=round_, labels_needed=1)
    url = f"/admin/annotate/labellinground/{round_.pk}/change/"
    old_page = _shown(staff_pages, url, "labellinground_form")
    assert old_page["initial-labels_per_pair"] == "1"
    assert staff_pages.post("/annotate/rounds/6/", {**_shown(staff_pages, "/annotate/rounds/6/", "round-settings"),
                                                    "labels_per_pair": "3"}).status_code == 302

    saved = staff_pages.post(url, {**old_page, "guidelines": "Be brief.", "_save": "Save"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    stored = LabellingRound.objects.get(pk=round_.pk)
    assert (stored.labels_per_pair, stored.guidelines) == (3, "Be brief.")
    assert Pair.objects.get(pk=pair.pk).labels_needed == 3
