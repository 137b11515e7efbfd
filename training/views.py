"""Staff pages of the training app: start a round, watch its live progress, cancel it."""
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404, redirect, render

from generation.services import GenerationError
from jobs.views import cancel_view
from prefloop.numerics import dtype_note

from . import services
from .forms import TrainingRunForm
from .models import TrainingRun


@staff_member_required
def runs(request):
    form = TrainingRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.start_training_run(
                input_version=form.cleaned_data["input_version"],
                reference_choice=form.cleaned_data["reference_choice"],
                data_choice=form.cleaned_data["data_choice"], params=form.params(), user=request.user,
            )
        except (services.TrainingError, GenerationError) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Training run {run.pk} queued.")
            return redirect("training:runs")
    recent = TrainingRun.objects.select_related("input_version", "reference_version", "output_version")[:20]
    return render(request, "training/runs.html", {"form": form, "runs": recent, "dtype_note": dtype_note()})


@staff_member_required
def run_progress(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("input_version", "output_version"), pk=pk)
    return render(request, "training/_run_row.html", {"run": run})


cancel_run = cancel_view(TrainingRun, partial="training/_run_row.html", name="run", then="training:runs")
