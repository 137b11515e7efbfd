"""One open lease per person. Leases doubled by the race this closes (parallel requests of one person each took a
pair) are ended first: each person keeps their newest, the others go back to the queue."""

from django.db import migrations, models


def end_doubled_leases(apps, schema_editor):
    Assignment = apps.get_model("annotate", "Assignment")
    keep: dict[int, int] = {}
    for pk, annotator_id in (
        Assignment.objects.filter(state="leased").order_by("annotator_id", "-leased_at", "-pk")
        .values_list("pk", "annotator_id").iterator()
    ):
        keep.setdefault(annotator_id, pk)
    Assignment.objects.filter(state="leased").exclude(pk__in=list(keep.values())).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("annotate", "0004_assignment_annotator_state"),
    ]

    operations = [
        migrations.RunPython(end_doubled_leases, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="assignment",
            constraint=models.UniqueConstraint(
                condition=models.Q(("state", "leased")), fields=("annotator",), name="one_open_lease_per_person"
            ),
        ),
    ]
