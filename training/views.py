"""Staff pages of the training app: start a round, watch its live progress and its dashboard, cancel it; check a
candidate version against the promotion gate, promote it by hand, roll back to an earlier version."""
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError as QueueUnreachable

from generation.models import ModelVersion
from generation.services import GenerationError, current_version
from jobs.views import cancel_view
from prefcore import charts
from prefloop.access import require, staff_required
from prefloop.numerics import dtype_note

from . import dashboard, promotion, services
from .forms import TrainingRunForm
from .models import TrainingRun


@staff_required
def runs(request):
    if request.method == "POST":
        require(request, "training.add_trainingrun")
    form = TrainingRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.start_training_run(
                input_version=form.cleaned_data["input_version"],
                reference_choice=form.cleaned_data["reference_choice"],
                data_choice=form.cleaned_data["data_choice"], params=form.params(), user=request.user,
                measured=form.measured,
            )
        except (services.TrainingError, GenerationError, QueueUnreachable) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Training run {run.pk} queued.")
            return redirect("training:runs")
    recent = TrainingRun.objects.select_related("input_version", "reference_version", "output_version")[:20]
    return render(request, "training/runs.html", {
        "form": form, "runs": recent, "dtype_note": dtype_note(), "versions": promotion.version_table(),
        "changes": promotion.recent_changes(), "gate_rule": promotion.gate_rule(), "previews": _previews(),
    })


def _previews() -> list[dict]:
    """What a round from the current version would train on, for each choice of labels."""
    try:
        current = current_version()
    except GenerationError:
        return []
    rate = services.training_rate(current)  # measured once for both choices
    return [services.training_preview(current, choice, rate=rate)
            for choice in services.DATA_CHOICES]


@staff_required
def run_progress(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("input_version", "output_version"), pk=pk)
    return render(request, "training/_run_row.html", {"run": run})


cancel_run = cancel_view(TrainingRun, partial="training/_run_row.html", name="run", then="training:runs")


@staff_required
@require_POST
def check_gate(request, pk: int):
    require(request, "generation.change_modelversion")  # it may make the version current
    run = get_object_or_404(TrainingRun.objects.select_related("output_version"), pk=pk)
    try:
        result = promotion.check_gate(run)
    except (promotion.PromotionError, GenerationError) as exc:
        messages.error(request, str(exc))
    else:
        name = run.output_version.name
        if result.passed:
            messages.success(request, f"{name} passed the gate and is now current: {result.reason}")
        else:
            messages.warning(request, f"{name} is kept out: {result.reason}")
    return redirect(f"{reverse('training:runs')}#versions")


@staff_required
@require_POST
def promote(request, pk: int):
    require(request, "generation.change_modelversion")
    run = get_object_or_404(TrainingRun.objects.select_related("output_version"), pk=pk)
    try:
        promotion.promote_by_hand(run, user=request.user, reason=request.POST.get("reason", ""))
    except promotion.PromotionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{run.output_version.name} promoted by hand and is now current.")
    return redirect(f"{reverse('training:runs')}#versions")


@staff_required
@require_POST
def rollback(request, pk: int):
    require(request, "generation.change_modelversion")
    version = get_object_or_404(ModelVersion, pk=pk)
    try:
        promotion.rollback(version, user=request.user, reason=request.POST.get("reason", ""))
    except promotion.PromotionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rolled back: {version.name} is now current.")
    return redirect(f"{reverse('training:runs')}#versions")


@staff_required
def run(request, pk: int):
    """One training run's dashboard: curves of margin, accuracy, loss and KL, its summary metrics, live while it
    runs. Staff-only like every page under /training/ (the compare pages link here for staff)."""
    run = get_object_or_404(TrainingRun.objects.select_related("input_version", "output_version"), pk=pk)
    series = dashboard.step_series(run)
    charts_html, used = [], set()
    for title, candidates in dashboard.CURVES:
        key = dashboard.find_key(series, candidates)
        if key:
            used.add(key)
        hlines = {"ln 2": dashboard.LN2} if title == "Loss" else {"0": 0.0} if title == "Reward margin" else {}
        charts_html.append(charts.line_chart({key or title: series.get(key, [])}, title=title, hlines=hlines))
    chosen, rejected = (dashboard.find_key(series, keys) for keys in (dashboard.CHOSEN_KEYS, dashboard.REJECTED_KEYS))
    if chosen and rejected:
        used |= {chosen, rejected}
        charts_html.append(charts.line_chart(
            {"chosen": series[chosen], "rejected": series[rejected]}, title="Chosen and rejected rewards",
            hlines={"0": 0.0},
        ))
    more = [charts.line_chart({k: v}, title=k, width=320, height=160) for k, v in sorted(series.items())
            if k not in used]
    summary = dashboard.numeric_items(run.metrics)
    last = {key: points[-1] for key, points in series.items()}
    context = {
        "run": run, "charts": charts_html, "more": more, "headline": (dashboard.headline(run.metrics, (run.params or {}).get("batch_size"))
                     or dashboard.headline({k: p[1] for k, p in last.items()}, (run.params or {}).get("batch_size"))),
        "summary": sorted(summary.items()), "last": sorted(last.items()), "steps": run.steps.count(),
        "warnings": dashboard.run_warnings(run, series), "has_chosen": bool(chosen),
        "tensorboard": services.tensorboard_dir(run) if services.tensorboard_dir(run).is_dir() else "",
    }
    template = "training/_run.html" if request.htmx else "training/run.html"
    return render(request, template, context)
