"""The admin's version page shows the version's mean answer length as every other page measures it."""
import re

from generation.models import ModelVersion, Response
from generation.services import update_mean_length
from tests.compare.conftest import make_prompt, make_version


def test_the_admin_shows_the_mean_answer_length_of_every_stored_answer(client, staff):
    """It showed the stored mean_response_tokens, which only a generation job or a round's measuring writes: a
    version measured at 10 tokens an answer that then answered a comparison set at 40 read 10, where the
    leaderboard, the rounds page and the API read 25."""
    version = make_version("okapi")
    prompts = [make_prompt() for _ in range(4)]
    for prompt in prompts[:2]:
        Response.objects.create(prompt=prompt, version=version, text="short", token_count=10)
    update_mean_length(version)  # as a generation job leaves it
    for prompt in prompts[2:]:  # a comparison set's answers: nothing writes the stored mean
        Response.objects.create(prompt=prompt, version=version, text="long", token_count=40)
    assert ModelVersion.objects.get(pk=version.pk).mean_response_tokens == 10
    client.force_login(staff)
    page = client.get(f"/admin/generation/modelversion/{version.pk}/change/").content.decode()
    shown = re.search(r"Mean answer tokens:</label>\s*<div class=\"readonly\">([^<]*)<", page)
    assert shown and shown.group(1) == "25 (mean over 4 answers, 0 cut off at the token limit)"
    assert 'name="mean_response_tokens"' not in page  # still not a field anyone edits
