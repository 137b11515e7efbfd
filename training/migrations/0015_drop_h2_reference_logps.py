"""Half-precision reference log-probs are now cached under "bfloat16/h3" ("float16/h3"): on the CPU the trainer packs a
batch without padding and runs its own attention, with the softmax in the compute dtype (training/dpo/logps.py), and
a policy's log-probs and its reference's must come from the same computation. Values under "/h2" came from
transformers' attention on padded batches and no run reads them any more; they are deleted here (the cache is
derived data: a run recomputes what is missing). fp32 values are unchanged and kept (the two attentions agree to
fp32's rounding there)."""
from django.db import migrations, models


def drop(apps, schema_editor):
    apps.get_model("training", "ReferenceLogp").objects.filter(dtype__in=("bfloat16/h2", "float16/h2")).delete()


class Migration(migrations.Migration):

    dependencies = [("training", "0014_data_choice_says_labelling_round")]

    operations = [
        migrations.AlterField(
            model_name="referencelogp",
            name="dtype",
            field=models.CharField(
                default="", max_length=16,
                help_text="The dtype the trainer computed it in, with the computation (training.dataset.cache_key: "
                          "'bfloat16/h3'); values under another key (empty: before dtypes were recorded) are not "
                          "reused.",
            ),
        ),
        migrations.RunPython(drop, migrations.RunPython.noop),
    ]
