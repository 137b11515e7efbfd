"""A prompt edited in the admin: found by an outside review, the edit kept the answers sampled for the old text
(answers are reused by prompt and settings, so comparisons, evaluations and the gate showed them as answers to the
new text) and the old text's hash (so the old text imported again was taken for the edited prompt)."""
from __future__ import annotations

import pytest

from annotate.importers import import_prompts
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import Prompt, Response, normalised_hash

pytestmark = pytest.mark.django_db


def _edit(client, prompt, text):
    return client.post(f"/admin/generation/prompt/{prompt.pk}/change/",
                       {"text": text, "messages": "null", "split": prompt.split, "source": "", "tag": "",
                        "hash": "0" * 64})


def test_an_answered_prompt_keeps_its_text_and_its_answers_stay_its_own(client, staff, tiny_model_dir, settings,
                                                                        tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    base = gen.register_version("base", tiny_model_dir)
    prompt = Prompt.objects.create(text="What is the capital of France?", split="eval")
    config = SamplingConfig(n=1, temperature=0, max_new_tokens=6)
    first = gen.answers_for(base, [prompt], config)[prompt.pk]
    client.force_login(staff)

    page = client.get(f"/admin/generation/prompt/{prompt.pk}/change/").content.decode()
    assert 'name="text"' not in page and 'name="hash"' not in page  # shown, not editable
    assert _edit(client, prompt, "Write a haiku about the sea.").status_code == 302
    prompt.refresh_from_db()
    assert prompt.text == "What is the capital of France?" and prompt.hash == normalised_hash(prompt.text)
    assert gen.answers_for(base, [prompt], config)[prompt.pk].pk == first.pk
    assert Response.objects.count() == 1


def test_an_unanswered_prompts_edit_gets_the_new_texts_hash_and_a_twin_is_refused_by_field(client, staff, tmp_path):
    prompt = Prompt.objects.create(text="What is the capital of France?")
    other = Prompt.objects.create(text="Name a fruit.")
    client.force_login(staff)
    assert _edit(client, prompt, "Write a haiku about the sea.").status_code == 302
    prompt.refresh_from_db()
    assert prompt.text == "Write a haiku about the sea." and prompt.hash == normalised_hash(prompt.text)
    # the old text is a new prompt now, the new one already stored
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "What is the capital of France?"}\n{"prompt": "write a haiku  about the sea."}\n')
    import_prompts(path)
    assert Prompt.objects.filter(text="What is the capital of France?").exists() and Prompt.objects.count() == 3

    twin = _edit(client, prompt, "  NAME a fruit. ")  # the same prompt as another, up to case and whitespace
    assert twin.status_code == 200 and f"is prompt {other.pk}&#x27;s already" in twin.content.decode()
    prompt.refresh_from_db()
    assert prompt.text == "Write a haiku about the sea."


@pytest.mark.slow
def test_hashes_an_earlier_edit_left_stale_are_recomputed_unless_another_prompt_holds_the_text(transactional_db):
    """Prompts edited before: the old text's hash kept. The migration gives each its own text's hash, except where
    another prompt holds that text already; saving that one in the admin then names the other (it was a 500: the
    error was put on the text field, read-only there)."""
    from django.test import Client

    from tests.annotate.factories import make_pair
    from tests.migrating import models_as_of

    with models_as_of([("generation", "0008_generationjob_runner")]) as old:
        stored = old.get_model("generation", "Prompt").objects
        edited = stored.create(text="Write a haiku about the sea.", hash=normalised_hash("What is the capital?"))
        twin = stored.create(text="Name a fruit.", hash=normalised_hash("Name a colour."))
        holder = stored.create(text="name a  FRUIT.", hash=normalised_hash("name a  FRUIT."))
    edited, twin = Prompt.objects.get(pk=edited.pk), Prompt.objects.get(pk=twin.pk)
    assert edited.hash == normalised_hash("Write a haiku about the sea.")
    assert twin.hash == normalised_hash("Name a colour.")  # its text's hash is the holder's

    make_pair(twin)  # answered: its text is read-only on the form
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    answer = client.post(f"/admin/generation/prompt/{twin.pk}/change/",
                         {"source": "", "tag": "fruit", "messages": "null"})
    assert answer.status_code == 200 and f"is prompt {holder.pk}&#x27;s already" in answer.content.decode()
