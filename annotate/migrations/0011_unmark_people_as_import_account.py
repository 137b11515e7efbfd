"""A person's account named "import" (with a password) could be taken for the import account by earlier versions:
its labels then counted as imported. Such marks are cleared; the next import makes an account of its own."""
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import migrations


def unmark(apps, schema_editor):
    profiles = apps.get_model("annotate", "AnnotatorProfile")
    profiles.objects.filter(is_import=True).exclude(user__password__startswith=UNUSABLE_PASSWORD_PREFIX).update(
        is_import=False)


class Migration(migrations.Migration):
    dependencies = [("annotate", "0010_job_alive_at")]
    operations = [migrations.RunPython(unmark, migrations.RunPython.noop)]
