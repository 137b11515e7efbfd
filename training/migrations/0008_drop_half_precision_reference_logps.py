"""Drop the cached reference log-probs computed in bf16 or fp16 before the lm_head ran in autocast's dtype.

Since this change the trainer takes the head's product in autocast's dtype (training/dpo/logps.py); a policy's
log-probs and its reference's must come from the same computation, or a round starts with a margin that is
rounding, not preference. The cache is derived data: a run recomputes what is missing. fp32 values are unchanged
and kept."""
from django.db import migrations


def drop(apps, schema_editor):
    apps.get_model("training", "ReferenceLogp").objects.filter(dtype__in=("bfloat16", "float16")).delete()


class Migration(migrations.Migration):

    dependencies = [("training", "0007_promotion_gate")]

    operations = [migrations.RunPython(drop, migrations.RunPython.noop)]
