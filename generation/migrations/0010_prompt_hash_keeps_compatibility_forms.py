"""Each prompt's hash as generation.models.normalised_hash now takes it: Unicode compatibility forms count (NFC, not
NFKC: "2³" and "23" were one prompt). A finer identity: no two prompts distinct before share a hash now, and none
that were one is split (a prompt is one row)."""
import hashlib
import json
import unicodedata

from django.db import migrations


def _hash(text_or_messages) -> str:  # generation.models.normalised_hash as of this migration
    if not isinstance(text_or_messages, str):
        text_or_messages = json.dumps(text_or_messages, sort_keys=True, ensure_ascii=False)
    text = unicodedata.normalize("NFC", text_or_messages).casefold()
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def recompute(apps, schema_editor):
    Prompt = apps.get_model("generation", "Prompt")
    changed = [(pk, _hash(messages or text)) for pk, text, messages, stored
               in Prompt.objects.values_list("pk", "text", "messages", "hash").iterator()
               if _hash(messages or text) != stored]
    for pk, own in changed:
        if not Prompt.objects.filter(hash=own).exists():  # (cannot happen: the old hash folded more)
            Prompt.objects.filter(pk=pk).update(hash=own)


class Migration(migrations.Migration):
    dependencies = [("generation", "0009_prompt_hash_from_text")]
    operations = [migrations.RunPython(recompute, migrations.RunPython.noop)]
