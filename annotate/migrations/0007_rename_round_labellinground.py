"""`Round` becomes `LabellingRound`: the name says which of the project's rounds it is. The table is renamed with it
and every row, foreign key and index stays as it was; the model's permissions keep their grants under the new
codenames (Django renames the content type itself, not the permissions' codenames)."""
from django.db import migrations

ACTIONS = ("add", "change", "delete", "view")


def _rename_permissions(apps, old: str, new: str, verbose: str) -> None:
    permission = apps.get_model("auth", "Permission")
    for action in ACTIONS:
        permission.objects.filter(content_type__app_label="annotate", codename=f"{action}_{old}").update(
            codename=f"{action}_{new}", name=f"Can {action} {verbose}")


def forwards(apps, schema_editor):
    _rename_permissions(apps, "round", "labellinground", "labelling round")


def backwards(apps, schema_editor):
    _rename_permissions(apps, "labellinground", "round", "round")


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0006_queue_order_routing_closing"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RenameModel(old_name="Round", new_name="LabellingRound"),
        migrations.AlterModelOptions(
            name="labellinground", options={"ordering": ["number"], "verbose_name": "labelling round"},
        ),
        migrations.RunPython(forwards, backwards),
    ]
