"""The home page: where the loop stands and what to do next."""
from django.contrib.auth.decorators import login_not_required
from django.db.models import F
from django.shortcuts import redirect, render
from django.templatetags.static import static

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


@login_not_required
def favicon(request):
    """Browsers ask for /favicon.ico before they read the page's <link rel="icon">: send them to the static file."""
    return redirect(static("prefloop/favicon.svg"), permanent=True)
