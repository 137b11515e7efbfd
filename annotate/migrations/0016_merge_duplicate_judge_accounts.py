"""Before judges were kept under one spelling (0013), one judge typed two ways ("judges.rules.length_target" and
"judges.rules:length_target") labelled and voted as two accounts; 0013 gave both accounts the one spelling, and
lookups take the first (annotate.judging.judge_account), so the second account's labels stayed under an annotator of
their own and the judge counted twice wherever both accounts had labelled a pair. This merges each judge's accounts
into the first (the lowest id, the one lookups find):

- a label or vote of the other account on a pair (comparison) the first has none on is moved to the first, with its
  lease row;
- one that repeats the first account's verdict on the same pair (comparison) is the same verdict stored twice: it is
  deleted, and the pair's count of labels (labels_done) lowered by one, so majorities count the judge once. Where the
  pair is no longer served (its round closed, or it is routed to the judge or held back) the labels it still asks
  for are lowered with it, as an undo does, so no pair reopens that no one would be given;
- one that differs from the first account's verdict is kept, under the other account (still marked with the judge):
  the judge said both, and neither is dropped;
- the other account's open leases go back to the queue; its other rows (API tokens, jobs it started) move to the
  first account; the other account is deleted once nothing of it is left to keep.
"""
from collections import defaultdict

from django.conf import settings
from django.db import migrations
from django.db.models import F

LEASED = "leased"
NOT_SERVED = ("judge", "duplicate")  # annotate.services.NOT_SERVED as of this migration


def _merge_labels(apps, keep: int, other: int) -> int:
    """Moves or drops the other account's labels (see the module's note); the number it keeps."""
    Label, Assignment, Pair = (apps.get_model("annotate", name) for name in ("Label", "Assignment", "Pair"))
    kept = dict(Label.objects.filter(annotator_id=keep).values_list("pair_id", "choice"))
    left = 0
    for label in Label.objects.filter(annotator_id=other).order_by("pk"):
        mine = kept.get(label.pair_id)
        if mine is None:
            # the first account's own row on the pair (a lease, a skip) gives way to the label's
            Assignment.objects.filter(annotator_id=keep, pair_id=label.pair_id).delete()
            # done: it holds a label now (a lease left open beside a label broke the one-open-lease rule on moving)
            Assignment.objects.filter(annotator_id=other, pair_id=label.pair_id).update(annotator_id=keep, state="done")
            label.annotator_id = keep
            label.save(update_fields=["annotator"])
            kept[label.pair_id] = label.choice
        elif mine == label.choice:
            Assignment.objects.filter(annotator_id=other, pair_id=label.pair_id).delete()
            label.delete()
            pair = Pair.objects.filter(pk=label.pair_id)
            pair.filter(labels_done__gt=0).update(labels_done=F("labels_done") - 1)
            row = pair.values("route", "round__closed_at").first()
            if row and (row["route"] in NOT_SERVED or row["round__closed_at"] is not None):
                pair.filter(labels_needed__gt=F("labels_done")).update(labels_needed=F("labels_done"))
        else:
            left += 1
    # what the other account holds on pairs it did not label: leases go back to the queue; a skip or an expired lease
    # moves where the first account has no row on the pair
    labelled = set(Label.objects.filter(annotator_id=other).values_list("pair_id", flat=True))
    rows = Assignment.objects.filter(annotator_id=other).exclude(pair_id__in=labelled)
    rows.filter(state=LEASED).delete()
    taken = set(Assignment.objects.filter(annotator_id=keep).values_list("pair_id", flat=True))
    for row in rows.order_by("pk"):
        if row.pair_id in taken:
            row.delete()
        else:
            row.annotator_id = keep
            row.save(update_fields=["annotator"])
    return left


def _merge_votes(apps, keep: int, other: int) -> int:
    """The other account's votes, as its labels (see the module's note); the number it keeps."""
    Vote = apps.get_model("compare", "Vote")
    kept = dict(Vote.objects.filter(voter_id=keep).values_list("comparison_id", "outcome"))
    left = 0
    for vote in Vote.objects.filter(voter_id=other).order_by("pk"):
        mine = kept.get(vote.comparison_id)
        if mine is None:
            vote.voter_id = keep
            vote.save(update_fields=["voter"])
            kept[vote.comparison_id] = vote.outcome
        elif mine == vote.outcome:
            vote.delete()
        else:
            left += 1
    return left


def merge(apps, schema_editor):
    User = apps.get_model(settings.AUTH_USER_MODEL)
    Profile = apps.get_model("annotate", "AnnotatorProfile")
    Label, Assignment, Vote = (apps.get_model("annotate", "Label"), apps.get_model("annotate", "Assignment"),
                               apps.get_model("compare", "Vote"))
    accounts = defaultdict(list)
    for user_id, path in (Profile.objects.filter(is_automatic=True).exclude(judge_path="").order_by("pk")
                          .values_list("user_id", "judge_path")):
        accounts[path].append(user_id)
    for keep, *others in accounts.values():
        for other in others:
            if _merge_labels(apps, keep, other) + _merge_votes(apps, keep, other):
                continue  # verdicts that differ from the first account's stay with it, and so does the account
            # every reverse link, those with no reverse name too (related_name="+": who promoted a version by hand,
            # who decided a round), which related_objects leaves out and deleting would have set to NULL
            for rel in User._meta._get_fields(forward=False, reverse=True, include_hidden=True):
                model = rel.related_model
                if rel.one_to_many and not model._meta.auto_created and model not in (Label, Assignment, Vote, Profile):
                    model._default_manager.filter(**{rel.field.name: other}).update(**{rel.field.name: keep})
            Profile.objects.filter(user_id=other).delete()
            User.objects.filter(pk=other).delete()


class Migration(migrations.Migration):
    # every app with a row that can name an account (labels, votes, tokens, the jobs it started, the admin's log):
    # the account is deleted only once each of them is moved, so each must be in the models this migration sees
    dependencies = [
        ("annotate", "0015_importjob_runner"),
        ("compare", "0007_comparejob_runner"),
        ("api", "0002_scrub_axes_form_data"),
        ("generation", "0008_generationjob_runner"),
        ("training", "0013_trainingrun_runner"),
        ("loop", "0004_looprun_runner"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    operations = [migrations.RunPython(merge, migrations.RunPython.noop)]
