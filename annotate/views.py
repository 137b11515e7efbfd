"""Views of the labelling workspace: the label page (full or its htmx partial), quality, import and export (both
as jobs)."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from jobs.views import cancel_view
from prefcore.text import word_diff
from prefloop.access import STAFF_ONLY, require
from prefloop.errors import refusal_page, sentence

from . import export_jobs, import_jobs, services
from . import quality as quality_report
from . import rounds as labelling_rounds
from .feedback import saved_line
from .forms import ExportForm, GoldPairForm, ImportForm, LabelForm, LabellingRoundForm, LeaseForm, PairForm, RoundForm
from .models import BY_PEOPLE, ExportJob, ImportJob, Label, LabellingRound, Pair


def _staff(request: HttpRequest, perm: str | None = None) -> None:
    """Staff only; `perm`: and the admin's permission for what a POST does (prefloop.access.may)."""
    if not request.user.is_staff:
        raise PermissionDenied(STAFF_ONLY)
    if perm is not None and request.method == "POST":
        require(request, perm)


def _pair_context(assignment) -> dict:
    if assignment is None:
        return {"assignment": None}
    pair = assignment.pair
    left, right = (pair.response_a, pair.response_b) if assignment.left_is_a else (pair.response_b, pair.response_a)
    diff = word_diff(left.text, right.text)
    prompt = pair.prompt
    return {
        "assignment": assignment,
        "pair": pair,
        "round": assignment.shown_round,
        "chat": prompt.chat,
        "left": left,
        "right": right,
        "diff_left": diff.left,  # escaped in word_diff
        "diff_right": diff.right,
        "diff_shown": diff.shown,
    }


def _workspace(request: HttpRequest, assignment, notice: str = "", saved: str = "") -> HttpResponse:
    context = _pair_context(assignment) | {"progress": services.progress_for(request.user), "notice": notice,
                                           "saved": saved}
    template = "annotate/_pair.html" if request.htmx else "annotate/label.html"
    return render(request, template, context)


def _next(request: HttpRequest, notice: str = "", saved: str = "") -> HttpResponse:
    if not request.htmx:
        if notice or saved:
            messages.info(request, notice or saved)
        return redirect("annotate:label")
    return _workspace(request, services.next_pair_for(request.user), notice, saved)


def label(request: HttpRequest) -> HttpResponse:
    """The pair to label now (the whole page, or the workspace alone for htmx)."""
    return _workspace(request, services.next_pair_for(request.user))


@require_POST
def submit(request: HttpRequest) -> HttpResponse:
    form = LabelForm(request.POST)
    if not form.is_valid():
        return _next(request, "That label was not understood: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    data = form.cleaned_data
    try:
        label = services.record_label(
            form.target(request.user), request.user, data["side"], strength=data["strength"] or None, comment=data["comment"],
            seconds=data["seconds"],
        )
    except services.LabelError as err:
        return _next(request, sentence(str(err)))
    return _next(request, saved=saved_line(label.side, label.strength, label.comment))  # what is stored


@require_POST
def skip_pair(request: HttpRequest) -> HttpResponse:
    form = LeaseForm(request.POST)
    if not form.is_valid():
        return _next(request, "Nothing to skip: " + form.problems())
    try:
        services.skip(request.user, form.target(request.user))
    except services.LabelError as err:
        return _next(request, sentence(str(err)))
    return _next(request, saved="Skipped: that pair will not be shown again")


@require_POST
def undo(request: HttpRequest) -> HttpResponse:
    assignment = services.undo_last_label(request.user)
    if assignment is None:
        return _next(request, "Nothing to undo: labels can be undone for a minute.")
    if not request.htmx:
        messages.info(request, "Label undone.")
        return redirect("annotate:label")
    return _workspace(request, assignment, "Label undone: label this pair again.")


def _rounds(value) -> list[int] | None:
    return [value] if value is not None else None


def quality(request: HttpRequest) -> HttpResponse:
    """Staff: agreement, each annotator's gold accuracy and time per label, and the disagreements."""
    _staff(request)
    form = RoundForm(request.GET)
    round_number = form.cleaned_data["round"] if form.is_valid() else None
    rounds = _rounds(round_number)
    return render(request, "annotate/quality.html", {
        "form_errors": form.errors.get("round", []),
        "agreement": quality_report.agreement(rounds),
        "annotators": quality_report.annotator_stats(rounds),
        "disagreements": quality_report.disagreements(rounds),
        "comments": quality_report.comments(rounds),
        "queue_choices": quality_report.queue_choices(rounds),
        "judge_agreements": quality_report.judge_agreements(rounds),
        "round_number": round_number,
    }, status=200 if form.is_valid() else 400)


def import_file(request: HttpRequest) -> HttpResponse:
    """Staff: upload prompts, pairs or preferences; a worker imports the file as a job with progress and a Cancel
    button (the same checks and messages as the commands), and the recent imports are listed."""
    _staff(request, "annotate.add_importjob")
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = import_jobs.start_form(form.cleaned_data, request.user)
        except import_jobs.ImportNotAllowed as exc:
            form.add_error("kind", str(exc))
            status = 403
        except import_jobs.QUEUE_ERRORS:
            form.add_error(None, import_jobs.QUEUE_DOWN)
            status = 503
        else:
            return redirect("annotate:import_job", pk=job.pk)
    else:
        status = 400 if request.method == "POST" else 200
    recent = ImportJob.objects.select_related("created_by").order_by("-created")[:10]
    return render(request, "annotate/import.html", {"form": form, "recent": recent}, status=status)


def import_job(request: HttpRequest, pk: int) -> HttpResponse:
    """Staff: one import's progress while it runs (the htmx partial is polled), then what it stored or why not."""
    _staff(request)
    job = get_object_or_404(ImportJob, pk=pk)
    return render(request, "annotate/_import_job.html" if request.htmx else "annotate/import_job.html", {"job": job})


import_cancel = cancel_view(ImportJob, partial="annotate/_import_job.html", name="job", then="annotate:import_job",
                            then_with_pk=True)


def export(request: HttpRequest) -> HttpResponse:
    """Staff: the export form; sent (POST), a worker writes the decided pairs as TRL JSONL, Parquet, or a zipped
    Hugging Face data set folder, as a job with progress and a Cancel button, whose page offers the file; the recent
    exports are listed. A GET with the form's fields (an old ?download= link) shows the form filled in."""
    _staff(request, "annotate.add_exportjob")
    form = ExportForm(request.POST if request.method == "POST" else (request.GET or None))
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                job = export_jobs.start_form(form.cleaned_data, request.user)
            except export_jobs.NothingToExport as exc:
                form.add_error(None, sentence(str(exc)))
            except export_jobs.QUEUE_ERRORS:
                form.add_error(None, sentence(export_jobs.QUEUE_DOWN))
                status = 503
            else:
                return redirect("annotate:export_job", pk=job.pk)
    elif request.GET and not form.is_valid():
        status = 400
    # imported labels are no one's here (models.BY_PEOPLE): counted "by people", as the Quality page does not
    labels = Label.objects.aggregate(people=Count("pk", filter=BY_PEOPLE),
                                     imported=Count("pk", filter=Q(is_automatic=False) & ~BY_PEOPLE),
                                     judges=Count("pk", filter=Q(is_automatic=True)))
    recent = ExportJob.objects.select_related("created_by").order_by("-created")[:10]
    return render(request, "annotate/export.html", {"form": form if form.is_bound else ExportForm(),
                                                    "labels": labels, "recent": recent, "kept": export_jobs.KEPT,
                                                    "from_link": request.method == "GET" and bool(request.GET)},
                  status=status)


def export_job(request: HttpRequest, pk: int) -> HttpResponse:
    """Staff: one export's progress while it runs (the htmx partial is polled), then its file or why not."""
    _staff(request)
    job = get_object_or_404(ExportJob, pk=pk)
    return render(request, "annotate/_export_job.html" if request.htmx else "annotate/export_job.html",
                  {"job": job, "kept": export_jobs.KEPT})


# (htmx: the job's own view, whose partial says how long a finished export's file is kept)
export_cancel = cancel_view(ExportJob, partial="annotate/_export_job.html", name="job", then="annotate:export_job",
                            then_with_pk=True, shown_by=export_job)


def export_download(request: HttpRequest, pk: int) -> FileResponse:
    """Staff: a finished export's file, as an attachment: the job's own file in its folder under the exports folder,
    never a path anything else names."""
    _staff(request)
    job = get_object_or_404(ExportJob, pk=pk)
    try:
        return FileResponse(export_jobs.open_file(job), as_attachment=True, filename=job.file_name)
    except export_jobs.NoFile as exc:  # as the API answers it: 409 for a job with no file (yet), 404 for one gone
        return refusal_page(request, "404.html" if exc.status == 404 else "400.html",
                            "Not found" if exc.status == 404 else "Refused", sentence(str(exc)), exc.status)


def skipped(request: HttpRequest) -> HttpResponse:
    """The pairs this person skipped, to return to one."""
    return render(request, "annotate/skipped.html", {"skipped": services.skipped_pairs(request.user)})


@require_POST
def return_to_skipped(request: HttpRequest) -> HttpResponse:
    form = LeaseForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing to return to: " + form.problems())
        return redirect("annotate:skipped")
    try:
        services.return_to_skipped(request.user, form.target(request.user))
    except services.LabelError as err:
        messages.error(request, sentence(str(err)))
        return redirect("annotate:skipped")
    return redirect("annotate:label")


def rounds(request: HttpRequest) -> HttpResponse:
    """Staff: the labelling rounds (guidelines, overlap, gold, queue order, routing, closing) and a new one."""
    _staff(request, "annotate.add_labellinground")
    form = LabellingRoundForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                round_ = form.save()
        except IntegrityError:  # another request took the number between the form's check and the save
            form.add_error("number", f"Labelling round {form.cleaned_data['number']} was just made by someone else.")
        else:
            messages.success(request, f"Labelling round {round_.number} created.")
            return redirect("annotate:round", number=round_.number)
    status = 400 if request.method == "POST" else 200
    return render(request, "annotate/rounds.html", {"form": form, "rows": labelling_rounds.round_rows()},
                  status=status)


def round_detail(request: HttpRequest, number: int) -> HttpResponse:
    """Staff: one labelling round's settings, and its gold pairs."""
    _staff(request, "annotate.change_labellinground")
    round_ = get_object_or_404(LabellingRound, number=number)
    form = LabellingRoundForm(request.POST or None, instance=round_, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            saved = labelling_rounds.save_round(form.save(commit=False), form.changed_data)
        except LabellingRound.DoesNotExist:
            raise Http404(f"labelling round {number} was deleted meanwhile") from None
        changed, step = saved.changed, saved.step
        note = (f"; {changed} pair{'s' if changed != 1 else ''} people label now need{'s' if changed == 1 else ''} "
                f"{abs(step)} label{'s' if abs(step) != 1 else ''} {'more' if step > 0 else 'fewer'}") if changed else ""
        messages.success(request, f"Labelling round {round_.number} saved{note}.")
        return redirect("annotate:round", number=round_.number)
    # a refused form leaves its values on the instance: the rest of the page shows the round as stored
    stored = LabellingRound.objects.get(pk=round_.pk)
    return _round_page(request, stored, form, GoldPairForm(), status=400 if request.method == "POST" else 200)


def _round_page(request, round_: LabellingRound, form, gold_form, status: int = 200) -> HttpResponse:
    gold = Pair.objects.filter(round=round_, is_gold=True).select_related("prompt", "response_a", "response_b")
    return render(request, "annotate/round.html", {"round": round_, "form": form, "gold_form": gold_form,
                                                   "gold": gold.order_by("pk")[:200]}, status=status)


@require_POST
def round_gold(request: HttpRequest, number: int) -> HttpResponse:
    """Staff: make a pair a gold pair of the round, with its right answer (which decides the pair for training, as a
    label would: the permission to add labels too)."""
    _staff(request, "annotate.change_pair")
    _staff(request, "annotate.add_label")
    round_ = get_object_or_404(LabellingRound, number=number)
    gold_form = GoldPairForm(request.POST)
    if gold_form.is_valid():
        pair_id, answer = gold_form.cleaned_data["pair"], gold_form.cleaned_data["answer"]
        try:
            labelling_rounds.set_gold(round_, pair_id, answer)
        except labelling_rounds.RoundError as exc:
            gold_form.add_error("pair", str(exc))
        else:
            messages.success(request, f"Pair {pair_id} is a gold pair of round {round_.number}: answer {answer} is "
                                      f"right.")
            return redirect("annotate:round", number=round_.number)
    return _round_page(request, round_, LabellingRoundForm(instance=round_), gold_form, status=400)


@require_POST
def round_ungold(request: HttpRequest, number: int) -> HttpResponse:
    """Staff: make a gold pair of the round a regular pair again (its labels decide it again: as setting it, the
    permission to add labels too)."""
    _staff(request, "annotate.change_pair")
    _staff(request, "annotate.add_label")
    round_ = get_object_or_404(LabellingRound, number=number)
    form = PairForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pair: " + " ".join(form.errors.get("pair", [])))
    else:
        pair_id = form.cleaned_data["pair"]
        try:
            labelling_rounds.unset_gold(round_, pair_id)
        except labelling_rounds.RoundError as exc:
            messages.error(request, sentence(str(exc)))
        else:
            messages.success(request, f"Pair {pair_id} is a regular pair again.")
            return redirect("annotate:round", number=round_.number)
    return _round_page(request, round_, LabellingRoundForm(instance=round_), GoldPairForm(), status=400)
