"""TrainingRun becomes a jobs.Job: its step counter is the job's done/total (renamed, data kept)."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("training", "0004_referencelogp_dtype")]

    operations = [
        migrations.RenameField("trainingrun", "step", "done"),
        migrations.RenameField("trainingrun", "total_steps", "total"),
    ]
