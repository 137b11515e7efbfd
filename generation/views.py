"""Staff pages of the generation app: start a generation job and watch it (htmx polls the progress partial)."""
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from kombu.exceptions import OperationalError as QueueUnreachable

from jobs.views import cancel_view
from prefloop.access import require, staff_required
from prefloop.numerics import dtype_note

from . import services
from .forms import GenerateForm
from .length import version_lengths
from .models import GenerationJob, ModelVersion


@staff_required
def jobs(request):
    if request.method == "POST":
        require(request, "generation.add_generationjob")
    form = GenerateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = services.start_generation_job(
                form.cleaned_data["version"], n_prompts=form.cleaned_data["prompts"], config=form.sampling_config(),
                split=form.cleaned_data["split"], tag=form.cleaned_data["tag"], pairing=form.cleaned_data["pairing"],
                judge=form.cleaned_data["judge"], user=request.user,
                with_reference=form.cleaned_data["with_reference"],
            )
        except (services.GenerationError, QueueUnreachable) as exc:  # the latter: the job is ended failed, said why
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Generation job {job.pk} queued: {job.total} prompts.")
            return redirect("generation:jobs")
    versions = list(ModelVersion.objects.all())
    lengths = version_lengths([v.pk for v in versions])
    context = {"form": form, "jobs": GenerationJob.objects.select_related("version")[:20],
               "versions": [(v, lengths[v.pk]) for v in versions], "dtype_note": dtype_note()}
    return render(request, "generation/jobs.html", context)


@staff_required
def job_progress(request, pk: int):
    job = get_object_or_404(GenerationJob, pk=pk)
    return render(request, "generation/_job_row.html", {"job": job})


cancel_job = cancel_view(GenerationJob, partial="generation/_job_row.html", name="job", then="generation:jobs")
