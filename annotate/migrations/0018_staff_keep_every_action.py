"""Staff given no permission at all could do everything in the pages and the API; now staff status alone grants
nothing (prefloop.access.may). So that an upgrade takes nothing from the staff an instance has, those active staff
members (not superusers) with no permission of their own or through a group are put in one group holding every
view, add and change permission of PrefLoop's apps (what the pages and the API read), for an administrator to
narrow. An instance with no such staff gets no group."""
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "PrefLoop staff (every action)"
APPS = ("jobs", "generation", "annotate", "training", "compare", "loop", "api")


def keep_every_action(apps, schema_editor):
    users = apps.get_model(settings.AUTH_USER_MODEL)
    staff = (users.objects.filter(is_active=True, is_staff=True, is_superuser=False, user_permissions__isnull=True)
             .exclude(groups__permissions__isnull=False))
    if not staff.exists():
        return
    # Permissions are made by post_migrate, after every migration has run: made here, for the models this very
    # migrate added too.
    for label in APPS:
        try:
            config = apps.get_app_config(label)
        except LookupError:  # an app with no models (jobs holds only an abstract one)
            continue
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        config.models_module = None
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=GROUP)
    # what the pages and the API let them do (they read view, add and change permissions): not the admin's deletes,
    # which staff status alone never reached
    group.permissions.add(*apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label__in=APPS).exclude(codename__startswith="delete_"))
    group.user_set.add(*staff)


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("annotate", "0017_export_job"),
        ("api", "0002_scrub_axes_form_data"),
        ("compare", "0007_comparejob_runner"),
        ("generation", "0010_prompt_hash_keeps_compatibility_forms"),
        ("loop", "0004_looprun_runner"),
        ("training", "0015_drop_h2_reference_logps"),
    ]
    operations = [migrations.RunPython(keep_every_action, migrations.RunPython.noop)]
