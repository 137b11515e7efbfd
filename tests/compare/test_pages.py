"""The compare pages: blind until the vote, one vote per person, escaped model text, starting a set."""
import re

import pytest
from django.urls import reverse

from compare.models import CompareJob, Vote

from .conftest import make_job, make_prompt

pytestmark = pytest.mark.django_db
NAMES = ("zebrafinch-base", "okapi-round-one")


def test_names_are_hidden_until_the_vote_and_shown_after(client, annotator, versions):
    base, child = versions
    job = make_job(child, base, n=2)
    client.force_login(annotator)
    page = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert 'data-side="left"' in page and 'data-side="right"' in page
    for name in NAMES:
        assert name not in page  # not in the text, attributes or comments

    comparison = job.comparisons.order_by("pk").first()
    after = client.post(reverse("compare:vote", args=[comparison.pk]), {"side": "left"}, HTTP_HX_REQUEST="true")
    revealed = after.content.decode()
    assert all(name in revealed for name in NAMES)
    assert Vote.objects.get(voter=annotator).outcome == "a"  # version A was on the left

    # the next comparison is blind again, and so is the partial htmx fetches
    nxt = client.get(reverse("compare:job", args=[job.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-side="left"' in nxt and not any(name in nxt for name in NAMES)
    assert "Blind comparison 2 of 2" in nxt


def test_sides_follow_the_stored_layout(client, annotator, versions):
    base, child = versions
    job = make_job(child, base, n=1, left_is_a=(False,))
    client.force_login(annotator)
    page = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    left = re.search(r'data-side="left">(.*?)</article>', page, re.S).group(1)
    assert "answer of B number 0" in left
    client.post(reverse("compare:vote", args=[job.comparisons.get().pk]), {"side": "left"})
    assert Vote.objects.get().outcome == "b"


def test_votes_are_stored_per_person(client, annotator, staff, versions):
    base, child = versions
    job = make_job(child, base, n=1)
    comparison = job.comparisons.get()
    url = reverse("compare:vote", args=[comparison.pk])
    client.force_login(annotator)
    client.post(url, {"side": "tie"})
    same = client.post(url, {"side": "tie"})  # a second press of the same key: the reveal again
    assert same.status_code == 200 and "Not changed" not in same.content.decode()
    again = client.post(url, {"side": "right"})  # another answer once the versions were shown: refused, and said so
    assert again.status_code == 200
    assert "Not changed: you voted tie on this comparison before" in again.content.decode()
    assert "You voted <strong>tie</strong>" in again.content.decode()
    client.force_login(staff)
    client.post(url, {"side": "both_bad"})
    assert sorted(Vote.objects.values_list("voter__username", "outcome")) == [("ann", "tie"), ("staff", "both_bad")]
    done = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert "all 1 voted" in done and all(name in done for name in NAMES)


def test_a_bad_side_is_refused(client, annotator, versions):
    job = make_job(*versions, n=1)
    client.force_login(annotator)
    response = client.post(reverse("compare:vote", args=[job.comparisons.get().pk]), {"side": "up"})
    assert response.status_code == 400 and b"side must be one of" in response.content
    assert not Vote.objects.exists()


def test_model_text_is_escaped(client, annotator, versions):
    base, child = versions
    job = make_job(child, base, n=1)
    comparison = job.comparisons.get()
    comparison.response_a.text = 'Sure! <script>alert("x")</script> <img src=x onerror=alert(1)> **bold**'
    comparison.response_a.save()
    client.force_login(annotator)
    page = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page and "<strong>bold</strong>" in page


def test_side_by_side_sets_show_names_and_take_no_votes(client, annotator, versions):
    base, child = versions
    job = make_job(child, base, n=2, blind=False)
    client.force_login(annotator)
    page = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert all(name in page for name in NAMES) and page.count('data-side="left"') == 2
    response = client.post(reverse("compare:vote", args=[job.comparisons.first().pk]), {"side": "left"})
    assert response.status_code == 400


def test_progress_is_polled_while_answering(client, annotator, versions):
    base, child = versions
    job = CompareJob.objects.create(version_a=child, version_b=base, prompt_ids=[1, 2], total=4, done=1,
                                    progress=0.25, status=CompareJob.RUNNING)
    client.force_login(annotator)
    partial = client.get(reverse("compare:job", args=[job.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in partial and "1 / 4 answers" in partial and '<progress class="bar" value="25" max="100">' in partial
    assert "<html" not in partial
    CompareJob.objects.filter(pk=job.pk).update(status=CompareJob.FAILED, error="RuntimeError: boom")
    failed = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert "Answering failed (staff can see why)" in failed and "hx-trigger" not in failed
    assert "RuntimeError: boom" not in failed  # the worker's error is for staff


def test_a_second_click_on_start_shows_the_set_the_first_started(client, staff, versions):
    base, child = versions
    make_prompt()
    client.force_login(staff)
    form = {"version_a": child.pk, "version_b": base.pk, "prompts": "eval", "limit": 5, "seed": 0, "blind": "on",
            "max_new_tokens": 64}
    from unittest import mock

    with mock.patch("compare.tasks.answer_compare_job.apply_async"):
        first = client.post(reverse("compare:index"), form)
        second = client.post(reverse("compare:index"), form, follow=True)
    job = CompareJob.objects.get()
    assert first.url == reverse("compare:job", args=[job.pk])
    assert second.redirect_chain == [(reverse("compare:job", args=[job.pk]), 302)]
    assert f"comparison set {job.pk} of these versions on these prompts with these settings is queued already" in \
        second.content.decode()


def test_staff_start_a_set_and_others_cannot(client, staff, annotator, versions, django_capture_on_commit_callbacks):
    base, child = versions
    make_prompt()
    client.force_login(annotator)
    client.post(reverse("compare:index"), {"version_a": child.pk, "version_b": base.pk, "prompts": "eval",
                                           "limit": 5, "seed": 0, "blind": "on"})
    assert not CompareJob.objects.exists()

    client.force_login(staff)
    index = client.get(reverse("compare:index")).content.decode()
    assert f'<option value="{child.pk}" selected>' in index  # default: current version as A, its parent as B
    form = {"version_a": child.pk, "version_b": child.pk, "prompts": "eval", "limit": 5, "seed": 0, "max_new_tokens": 64}
    same = client.post(reverse("compare:index"), form)
    assert same.status_code == 400 and b"Choose a different version" in same.content
    from unittest import mock

    with mock.patch("compare.tasks.answer_compare_job.apply_async") as send:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("compare:index"), dict(form, version_b=base.pk, prompts="typed",
                                                                    text="Name three rivers."))
    job = CompareJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("compare:job", args=[job.pk])
    assert not job.blind and send.call_args.args[0] == (job.pk,)
    assert job.params["sampling"] == {"max_new_tokens": 64}


def test_a_chat_prompt_is_shown_whole_to_voters(client, annotator, versions):
    """The compare pages showed a chat prompt's last user turn alone (its `text`): a voter judged answers to a
    question they could not see whole ("answer only in French" in the system prompt hidden), though the versions
    answered the whole chat and the judges vote on it (found by an outside review)."""
    base, child = versions
    job = make_job(child, base, n=1)
    prompt = job.comparisons.get().prompt
    prompt.messages = [{"role": "system", "content": "SYSTEM-RULE: answer <b>only</b> in French"},
                       {"role": "user", "content": "EARLIER-TURN: name a cat"},
                       {"role": "assistant", "content": "Minou"},
                       {"role": "user", "content": "And a dog?"}]
    prompt.text = "And a dog?"
    prompt.save()
    client.force_login(annotator)
    blind = client.get(reverse("compare:job", args=[job.pk])).content.decode()
    for shown in ("SYSTEM-RULE: answer &lt;b&gt;only&lt;/b&gt; in French", "EARLIER-TURN: name a cat", "Minou",
                  "And a dog?"):
        assert shown in blind
    assert blind.index("SYSTEM-RULE") < blind.index("EARLIER-TURN") < blind.index("And a dog?")
    revealed = client.post(reverse("compare:vote", args=[job.comparisons.get().pk]), {"side": "left"}).content.decode()
    assert "SYSTEM-RULE" in revealed and "EARLIER-TURN" in revealed
    job.blind = False
    job.save()
    assert "SYSTEM-RULE" in client.get(reverse("compare:job", args=[job.pk])).content.decode()


def test_the_sets_list_counts_the_prompts_a_finished_set_compared(client, staff, versions):
    """The list's Prompts column counted the prompts a set was given, where the set had compared fewer (a prompt
    deleted meanwhile, or too long for a version's context: its log names them), so a set of 2 comparisons read 3."""
    job = make_job(*versions, n=2)
    job.prompt_ids = [*job.prompt_ids, make_prompt().pk]  # given, never compared
    job.save()
    client.force_login(staff)
    row = next(r for r in re.findall(r"<tr>.*?</tr>", client.get("/compare/").content.decode(), re.S)
               if f"#{job.pk}<" in r)
    assert re.search(r"<td>\s*2 of 3\s*</td>", row), row
    # a set that ended having compared none (every prompt too long), and one still waiting for its answers
    ended = CompareJob.objects.create(version_a=versions[0], version_b=versions[1], prompt_ids=job.prompt_ids,
                                      status=CompareJob.FAILED, total=6)
    waiting = CompareJob.objects.create(version_a=versions[0], version_b=versions[1], prompt_ids=job.prompt_ids,
                                        total=6)
    rows = re.findall(r"<tr>.*?</tr>", client.get("/compare/").content.decode(), re.S)
    shown = {pk: next(r for r in rows if f"#{pk}<" in r) for pk in (ended.pk, waiting.pk)}
    assert re.search(r"<td>\s*0 of 3\s*</td>", shown[ended.pk]), shown[ended.pk]
    assert re.search(r"<td>\s*3\s*</td>", shown[waiting.pk]), shown[waiting.pk]


def test_a_typed_prompt_longer_than_the_api_takes_is_refused_and_nothing_is_stored(client, staff, versions):
    """The Compare page stored a typed prompt of several megabytes as a Prompt (an outside probe); POST
    /api/v1/compare takes 20,000 characters. The page now says the field is too long and stores nothing."""
    from unittest import mock

    from generation.models import Prompt

    base, child = versions
    client.force_login(staff)
    make_prompt()
    before = Prompt.objects.count()
    form = {"version_a": child.pk, "version_b": base.pk, "prompts": "typed", "limit": 5, "seed": 0,
            "max_new_tokens": 64, "text": "x" * 20_001}
    response = client.post(reverse("compare:index"), form)
    assert response.status_code == 400
    assert "at most 20000 characters (it has 20001)" in response.content.decode()
    assert Prompt.objects.count() == before and not CompareJob.objects.exists()
    # a browser sends each line break it counted as one character as two ("\r\n"): the limit counts them as one
    lines = dict(form, text="x\r\n" * 9_999 + "xx")
    with mock.patch("compare.tasks.answer_compare_job.apply_async"):
        assert client.post(reverse("compare:index"), lines).status_code == 302
    # and a long text left in the box while the eval split is chosen is not the set's prompt: nothing to refuse
    with mock.patch("compare.tasks.answer_compare_job.apply_async"):
        assert client.post(reverse("compare:index"), dict(form, prompts="eval", seed=1)).status_code == 302
