"""Staff pages of the loop app: start "run N rounds with judge J" and watch each round's figures arrive live."""
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from kombu.exceptions import OperationalError as QueueUnreachable

from jobs.views import cancel_view
from judges import JudgeError
from prefloop.access import require, staff_required

from . import services
from .forms import LoopRunForm
from .models import LoopRun


@staff_required
def runs(request):
    if request.method == "POST":
        require(request, "loop.add_looprun")
    form = LoopRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.start_loop_run(user=request.user, **form.cleaned_data)
        except services.AlreadyStarted as exc:  # a second click on Start: the run the first one started
            messages.info(request, f"{exc}.")
            return redirect("loop:run", pk=exc.job.pk)
        except (services.LoopError, JudgeError, QueueUnreachable) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Loop run {run.pk} queued.")
            return redirect("loop:run", pk=run.pk)
    return render(request, "loop/runs.html", {"form": form, "runs": LoopRun.objects.all()[:20]})


@staff_required
def run(request, pk: int):
    """The run with its per-round table; htmx polls the same URL for the partial while it is active."""
    loop_run = get_object_or_404(LoopRun, pk=pk)
    template = "loop/_run.html" if request.htmx else "loop/run.html"
    return render(request, template, {"run": loop_run})


cancel = cancel_view(LoopRun, partial="loop/_run.html", name="run", then="loop:run", then_with_pk=True)
