"""Prompts stored as one user message become text prompts, so an import finds them as the prompts they are."""
from __future__ import annotations

import pytest

from tests.migrating import models_as_of

BEFORE = [("generation", "0004_promotion_gate")]


@pytest.mark.slow
def test_one_turn_chat_prompts_become_text_unless_their_text_is_taken(transactional_db, tmp_path):
    from generation.models import normalised_hash

    one = [{"role": "user", "content": "Explain gravity."}]
    taken = [{"role": "user", "content": "Name a fruit."}]
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    with models_as_of(BEFORE) as old:
        Prompt = old.get_model("generation", "Prompt")
        Prompt.objects.create(text="Explain gravity.", messages=one, hash=normalised_hash(one), split="eval")
        Prompt.objects.create(text="Name a fruit.", messages=taken, hash=normalised_hash(taken))
        Prompt.objects.create(text="Name a fruit.", hash=normalised_hash("Name a fruit."), split="eval")
        Prompt.objects.create(text="Name a colour.", messages=two, hash=normalised_hash(two))
    from annotate.importers import import_preferences
    from generation.models import Prompt

    gravity = Prompt.objects.get(text="Explain gravity.")
    assert gravity.messages is None and gravity.hash == normalised_hash("Explain gravity.")
    assert Prompt.objects.filter(text="Name a fruit.", messages__isnull=False).count() == 1  # its text is taken
    assert Prompt.objects.get(text="Name a colour.").messages == two
    # an import of the eval prompt, either way written, finds it and sets its pair aside
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Explain gravity.", "chosen": "a", "rejected": "b"}\n')
    assert list(import_preferences(path).set_aside) == [1] and Prompt.objects.count() == 4
