"""The home page: where the loop stands and what to do next."""
from django.db.models import F
from django.shortcuts import render

from annotate.models import Pair
from generation.models import ModelVersion
from training.models import TrainingRun


def home(request):
    context = {
        "current": ModelVersion.objects.filter(is_current=True).first(),
        "versions": ModelVersion.objects.count(),
        "pairs_waiting": Pair.objects.filter(labels_done__lt=F("labels_needed")).count(),
        "runs": TrainingRun.objects.all()[:5],
    }
    return render(request, "home.html", context)
