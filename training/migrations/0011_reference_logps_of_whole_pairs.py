"""Cached log-probs are now stored only from pairs scored whole (training.dataset.store_reference_logps). Until
now a pair cut to max_length was cached too, and its value stood for the same answer in other pairs: beside a
shorter partner, or under another max_prompt_length, that answer is scored on more tokens, and the cached value
was not its log-prob there. Which stored values came from a cut pair is not recorded, so all are deleted here (the
cache is derived data: a run recomputes what is missing, one reference pass)."""
from django.db import migrations


def drop(apps, schema_editor):
    apps.get_model("training", "ReferenceLogp").objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [("training", "0010_data_choice_spin")]

    operations = [migrations.RunPython(drop, migrations.RunPython.noop)]
