"""Each prompt's hash from its own text (or chat) again: the admin kept a prompt's first hash when its text was
edited, so the old text imported again was taken for the edited prompt. A prompt whose recomputed hash another
prompt holds already (the edited text is stored twice) keeps its hash; the admin names the other prompt when it is
next saved."""
import hashlib
import json
import unicodedata

from django.db import migrations


def _hash(text_or_messages) -> str:  # generation.models.normalised_hash as of this migration
    if not isinstance(text_or_messages, str):
        text_or_messages = json.dumps(text_or_messages, sort_keys=True, ensure_ascii=False)
    text = unicodedata.normalize("NFKC", text_or_messages).casefold()
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def recompute(apps, schema_editor):
    Prompt = apps.get_model("generation", "Prompt")
    stale = []
    for pk, text, messages, stored in Prompt.objects.values_list("pk", "text", "messages", "hash").iterator():
        own = _hash(messages or text)
        if own != stored:
            stale.append((pk, own))
    for pk, own in stale:
        if not Prompt.objects.filter(hash=own).exists():
            Prompt.objects.filter(pk=pk).update(hash=own)


class Migration(migrations.Migration):
    dependencies = [("generation", "0008_generationjob_runner")]
    operations = [migrations.RunPython(recompute, migrations.RunPython.noop)]
