"""The home page: where the loop stands and what to do next."""
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect, render
from django.templatetags.static import static

from annotate.services import open_pair_count, progress_for
from generation.models import ModelVersion
from training.models import TrainingRun


def home(request):
    context = {
        "current": ModelVersion.objects.current(),
        "versions": ModelVersion.objects.count(),
        # The same counts as the label page: pairs waiting for this person, and (for staff) the whole open queue.
        "waiting_for_you": progress_for(request.user).remaining,
        "pairs_open": open_pair_count(),
        "runs": TrainingRun.objects.select_related("input_version", "output_version")[:5],
    }
    return render(request, "home.html", context)


@login_not_required
def favicon(request):
    """Browsers ask for /favicon.ico before they read the page's <link rel="icon">: send them to the static file."""
    return redirect(static("prefloop/favicon.svg"), permanent=True)
