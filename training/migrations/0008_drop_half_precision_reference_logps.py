"""Half-precision reference log-probs are now cached under a key that names the computation ("bfloat16/h2",
training.dataset.cache_key): the trainer takes the lm_head's product in autocast's dtype since this change
(training/dpo/logps.py), and a policy's log-probs and its reference's must come from the same computation. Values
under the bare "bfloat16" or "float16" key came from the fp32-head computation and no run reads them any more; they
are deleted here (the cache is derived data: a run recomputes what is missing). fp32 values are unchanged and kept."""
from django.db import migrations, models


def drop(apps, schema_editor):
    apps.get_model("training", "ReferenceLogp").objects.filter(dtype__in=("bfloat16", "float16")).delete()


class Migration(migrations.Migration):

    dependencies = [("training", "0007_promotion_gate")]

    operations = [
        migrations.AlterField(
            model_name="referencelogp",
            name="dtype",
            field=models.CharField(
                default="", max_length=16,
                help_text="The dtype the trainer computed it in, with the computation (training.dataset.cache_key: "
                          "'bfloat16/h2'); values under another key (empty: before dtypes were recorded) are not "
                          "reused.",
            ),
        ),
        migrations.RunPython(drop, migrations.RunPython.noop),
    ]
