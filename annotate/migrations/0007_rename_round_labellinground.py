"""`Round` becomes `LabellingRound`: the name says which of the project's rounds it is. The table is renamed with it
and every row, foreign key and index stays as it was."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0006_queue_order_routing_closing"),
    ]

    operations = [
        migrations.RenameModel(old_name="Round", new_name="LabellingRound"),
        migrations.AlterModelOptions(
            name="labellinground", options={"ordering": ["number"], "verbose_name": "labelling round"},
        ),
    ]
