"""A prompt stored as one user message becomes the text prompt it is (as imports now store it): hashed as a chat,
it was not found as the same prompt as its text, so the same eval prompt written that way became a train prompt, and
a re-imported export added its pairs again. A prompt whose text another prompt already holds is left as it is (two
prompts stay two: each has its own answers and pairs)."""
import hashlib
import unicodedata

from django.db import migrations


def _text_hash(text: str) -> str:  # generation.models.normalised_hash of a text, as of this migration
    folded = unicodedata.normalize("NFKC", text).casefold()
    return hashlib.sha256(" ".join(folded.split()).encode()).hexdigest()


def one_turn_chats_to_text(apps, schema_editor):
    Prompt = apps.get_model("generation", "Prompt")
    for prompt in Prompt.objects.exclude(messages__isnull=True).iterator(chunk_size=500):
        messages = prompt.messages
        if not (isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict)
                and messages[0].get("role") == "user" and messages[0].get("content") == prompt.text):
            continue
        text_hash = _text_hash(prompt.text)
        if Prompt.objects.filter(hash=text_hash).exclude(pk=prompt.pk).exists():
            continue
        Prompt.objects.filter(pk=prompt.pk).update(messages=None, hash=text_hash)


class Migration(migrations.Migration):
    dependencies = [("generation", "0004_promotion_gate")]
    operations = [migrations.RunPython(one_turn_chats_to_text, migrations.RunPython.noop)]
