"""A round's queue order replaces the active_learning flag (a round that had it on serves "uncertain"); pairs record
the version their margin was scored under and where their decision comes from; rounds get routing and closing
settings."""

import django.db.models.deletion
from django.db import migrations, models


def order_from_flag(apps, schema_editor):
    Round = apps.get_model("annotate", "Round")
    Round.objects.filter(active_learning=True).update(queue_order="uncertain")


def flag_from_order(apps, schema_editor):
    Round = apps.get_model("annotate", "Round")
    Round.objects.filter(queue_order__in=["uncertain", "disagreement"]).update(active_learning=True)


class Migration(migrations.Migration):

    dependencies = [
        ('annotate', '0005_one_open_lease_per_person'),
        ('generation', '0002_response_sampling_key'),
    ]

    operations = [
        migrations.AddField(
            model_name='pair',
            name='margin_version',
            field=models.ForeignKey(blank=True, help_text='The version the margin was scored under.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='generation.modelversion'),
        ),
        migrations.AddField(
            model_name='pair',
            name='route',
            field=models.CharField(blank=True, choices=[('', 'not routed'), ('people', 'sent to people'), ('judge', "the judge's label accepted"), ('duplicate', 'held back: near-duplicate answers')], default='', max_length=10),
        ),
        migrations.AddField(
            model_name='round',
            name='audit_share',
            field=models.FloatField(default=0.1, help_text='Share of the pairs the judge would decide that people label anyway, for auditing.'),
        ),
        migrations.AddField(
            model_name='round',
            name='close_width',
            field=models.FloatField(blank=True, help_text='Close labelling once the held-out reward-accuracy 95% interval after training is narrower than this (e.g. 0.15). Empty: never closes by itself.', null=True),
        ),
        migrations.AddField(
            model_name='round',
            name='closed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='round',
            name='closed_reason',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='round',
            name='queue_order',
            field=models.CharField(choices=[('random', 'random (oldest first)'), ('uncertain', 'uncertain: smallest implicit-reward margin first'), ('disagreement', 'disagreement: where a judge and the current version disagree first')], default='random', max_length=20),
        ),
        migrations.AddField(
            model_name='round',
            name='route_judge',
            field=models.CharField(blank=True, help_text="A judge path (as its labels are stored, e.g. judges.rules:length_target): route this round's pairs between it and people. Empty: no routing.", max_length=300),
        ),
        migrations.AddField(
            model_name='round',
            name='route_threshold',
            field=models.FloatField(default=0.8, help_text="People label a pair when the judge's agreement with people on its prompt tag (lower bound of the 95% Wilson interval) is below this; above it the judge's label stands."),
        ),
        migrations.AlterField(
            model_name='pair',
            name='margin',
            field=models.FloatField(blank=True, help_text='Implicit-reward margin beta*[(log pi - log pi_ref)(a) - (log pi - log pi_ref)(b)] under margin_version against its base; > 0: that version prefers a.', null=True),
        ),
        migrations.RunPython(order_from_flag, flag_from_order),
        migrations.RemoveField(
            model_name='round',
            name='active_learning',
        ),
    ]
