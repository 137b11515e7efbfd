"""Views of the compare app: start a comparison set, vote blind, the leaderboard, the rounds dashboard."""
from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError as QueueUnreachable

from jobs.views import cancel_view
from prefloop.access import may, refusal
from training import dashboard
from training.models import TrainingRun

from . import blinding, leaderboard, services
from .forms import StartForm
from .models import CompareJob, Comparison


def index(request):
    """The start form (staff) and the comparison sets to vote on."""
    if request.method == "POST":
        return _start(request)
    a, b = services.default_versions()
    form = StartForm(initial={"version_a": a, "version_b": b})
    return _index_page(request, form)

def _index_page(request, form, status=200):
    # A blind set's versions are named to people once they have voted on all of it: two blind sets sharing an
    # answer (answers are reused across sets) and named "child vs base" and "other vs child" told whose it was.
    jobs = services.sets_with_counts(request.user).select_related("version_a", "version_b")[:20]
    return render(request, "compare/index.html", {"form": form, "jobs": jobs}, status=status)

def _start(request):
    if not request.user.is_staff:
        messages.error(request, "Only staff can start a comparison: it samples from both versions.")
        return redirect("compare:index")
    if not may(request.user, "compare.add_comparejob"):
        messages.error(request, refusal("compare.add_comparejob"))
        return redirect("compare:index")
    form = StartForm(request.POST)
    if not form.is_valid():
        return _index_page(request, form, status=400)
    data = form.cleaned_data
    try:
        job = services.start_compare_job(
            data["version_a"], data["version_b"], text=data["text"] if data["prompts"] == StartForm.TYPED else "",
            limit=data["limit"], blind=data["blind"], seed=data["seed"], user=request.user,
            sampling={"max_new_tokens": data["max_new_tokens"]},
        )
    except services.AlreadyStarted as exc:  # a second click on Start: the set the first one started
        messages.info(request, f"{exc}.")
        return redirect("compare:job", pk=exc.job.pk)
    except services.CompareError as exc:
        form.add_error(None, str(exc))
        return _index_page(request, form, status=400)
    except QueueUnreachable as exc:  # the set is ended failed, and the message says so
        form.add_error(None, str(exc))
        return _index_page(request, form, status=503)
    return redirect("compare:job", pk=job.pk)

def job(request, pk: int):
    """A comparison set: progress while it is answered, then one comparison at a time (blind) or all (side by side).

    The htmx partial is the same content, polled while the set is being answered.
    """
    job = get_object_or_404(CompareJob, pk=pk)
    # a set whose judge was stopped or failed after its comparisons were made is answered all the same: it is
    # votable, as its stage says (it was shown as a failed or cancelled answering, with nothing to vote on)
    answered = job.status == CompareJob.SUCCEEDED or (not job.is_active and job.comparisons.exists())
    context, status = {"job": job, "answered": answered}, 200
    if answered:
        if job.blind:
            context.update(services.blind_progress(job, request.user))
            if context["comparison"] is None:
                context["summary"] = services.job_summary(job)
        elif pending := blinding.pending_blind_sets(job, request.user):
            # Its answers are also in blind sets this person can still vote on: names now would unblind them. (The
            # htmx poll that watched the set being answered gets the message with a 200, or htmx would not show it.)
            context["pending"], status = pending, 200 if request.htmx else 403
        else:
            context["comparisons"] = job.comparisons.select_related("prompt", "response_a", "response_b").order_by("pk")
    template = "compare/_job.html" if request.htmx else "compare/job.html"
    return render(request, template, context, status=status)

# Stop answering a set (staff: they started it); the page then shows what was kept.
cancel = cancel_view(CompareJob, partial="compare/_job.html", name="job", then="compare:job", then_with_pk=True,
                     shown_by=job)

def _refused(text: str) -> HttpResponseBadRequest:
    """A refused vote, as plain text: the message may quote what was posted, which must never be read as HTML. The
    page (static/prefloop/errors.js) shows it in its status line, so it says first that the vote was not recorded."""
    return HttpResponseBadRequest(f"Your vote was not recorded: {text}",
                                  content_type="text/plain; charset=utf-8")


@require_POST
def vote(request, pk: int):
    """Record the key pressed (left, right, tie, both_bad), then reveal which version was on which side."""
    comparison = get_object_or_404(Comparison.objects.select_related("job", "prompt"), pk=pk)
    try:
        outcome = services.outcome_for_side(comparison, request.POST.get("side", ""))
    except services.CompareError as exc:
        return _refused(str(exc))
    refused = services.refusal_to_vote(comparison, request.user)  # the API's refusals too (api.voting)
    if refused:
        return _refused(f"{refused[1]}.")
    notice = ""
    try:
        services.record_vote(comparison, request.user, outcome)
    except services.AlreadyVoted:
        pass  # a second press: the reveal again, saying so when it asked for another answer (the first one stands)
    except services.CompareError as exc:  # a set that is not blind
        return _refused(str(exc))
    vote = comparison.votes.get(voter=request.user)
    voted_side = services.side_for_outcome(comparison, vote.outcome)
    if vote.outcome != outcome:
        # the versions were shown after the first vote: a changed vote would no longer be blind
        notice = (f"Not changed: you voted {voted_side} on this comparison before, and a vote stands once the "
                  "versions are shown.")
    context = {"comparison": comparison, "job": comparison.job, "voted_side": voted_side, "notice": notice}
    template = "compare/_reveal.html" if request.htmx else "compare/reveal.html"
    return render(request, template, context)

def leaderboard_view(request):
    include_automatic = request.GET.get("automatic") == "1"
    board = leaderboard.build_board(include_automatic=include_automatic)
    return render(request, "compare/leaderboard.html", {"board": board, "include_automatic": include_automatic})

def rounds(request):
    """Across rounds: each version's rating and answer length, and, for staff (as the run pages and the metrics API
    are staff's), each training run's stored metrics and warnings."""
    include_automatic = request.GET.get("automatic") == "1"
    board = leaderboard.build_board(include_automatic=include_automatic)  # the leaderboard's fit: the same intervals
    staff = request.user.is_staff
    rows = dashboard.version_rows({r.version: r for r in board.rows}, with_runs=staff)
    runs = TrainingRun.objects.select_related("input_version", "output_version")[:50] if staff else []
    return render(request, "compare/rounds.html", {
        "rows": rows, "runs": runs, "anchor": board.anchor, "include_automatic": include_automatic,
        "lc_needs": board.lc_needs,
    })

def run(request, run_id: int):
    """The run dashboard's first address: it lives with the training app now."""
    return redirect("training:run", pk=run_id, permanent=True)

