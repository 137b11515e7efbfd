"""Exporting the decided pairs needed staff status alone until exports became jobs (annotate.ExportJob): now it
needs the permission to add an export job, and a Cancel the permission to change one. So that an upgrade takes
exporting from no one, every active staff member (not a superuser) whom an administrator had given some permissions
(their own or a group's) gets the export job's view, add and change permissions; staff with none are in the group
"PrefLoop staff (every action)" (migration 0018), which holds them already."""
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

CODENAMES = ("view_exportjob", "add_exportjob", "change_exportjob")
GROUP = "PrefLoop staff (every action)"  # migration 0018's


def keep_exporting(apps, schema_editor):
    users = apps.get_model(settings.AUTH_USER_MODEL)
    # (not the members of 0018's group, which holds these already: given them too, they kept exporting after an
    # administrator narrowed the group)
    staff = users.objects.filter(is_active=True, is_staff=True, is_superuser=False).exclude(groups__name=GROUP)
    if not staff.exists():
        return
    # the export job's permissions are made by post_migrate, after every migration has run: made here
    config = apps.get_app_config("annotate")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    config.models_module = None
    exporting = list(apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="annotate", codename__in=CODENAMES))
    for person in staff:
        if person.user_permissions.exists() or person.groups.filter(permissions__isnull=False).exists():
            person.user_permissions.add(*exporting)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("annotate", "0018_staff_keep_every_action"),
    ]
    operations = [migrations.RunPython(keep_exporting, migrations.RunPython.noop)]
