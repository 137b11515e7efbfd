"""Failed sign-ins recorded before AXES_SENSITIVE_PARAMETERS named the password-change form's fields kept that form's
passwords in clear (the mistyped current one and the new one): their form data is removed."""
from django.db import migrations

FIELDS = ("old_password=", "new_password1=", "new_password2=", "password1=", "password2=")
REMOVED = "(removed: it held passwords in clear)"


def scrub(apps, schema_editor):
    AccessAttempt = apps.get_model("axes", "AccessAttempt")
    for pk, data in AccessAttempt.objects.values_list("pk", "post_data").iterator():
        if any(line.startswith(FIELDS) for line in (data or "").split("\n")):
            AccessAttempt.objects.filter(pk=pk).update(post_data=REMOVED)


class Migration(migrations.Migration):
    dependencies = [("api", "0001_initial"), ("axes", "0010_accessattemptexpiration")]
    operations = [migrations.RunPython(scrub, migrations.RunPython.noop)]
