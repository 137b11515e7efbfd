"""Forms of the labelling workspace: a label, the staff upload and the staff export."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator

from judges import JudgeError, canonical_path, check_folder_access, check_judge
from prefcore.rows import FORMATS, SUFFIXES

from .exporters import EXPORT_FORMATS
from .hf_dataset import DEFAULT_LICENSE
from .models import MAX_ID, MAX_NUMBER, SIDES, A, B, ImportJob, LabellingRound
from .rounds import SETTINGS
from .services import Lease, named


class PairForm(forms.Form):
    """A pair named by staff (unset a gold pair): an id, checked before it reaches the database."""

    pair = forms.IntegerField(min_value=1, max_value=MAX_ID)


class LeaseForm(forms.Form):
    """The pair a key press is about (skip, label, return to a skipped one): the lease's id, as the page gives it
    (never the pair's), or, from staff and automatic labellers only, the pair's id (services.named); checked before
    either reaches the database."""

    lease = forms.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    pair = forms.IntegerField(min_value=1, max_value=MAX_ID, required=False)

    def clean(self):
        data = super().clean()
        if data.get("lease") is None and data.get("pair") is None and not self.errors:
            self.add_error("lease", "expected the id of the lease on your screen")
        return data

    def target(self, user) -> Lease | int:
        """What services take: the lease (looked up as it is locked, no query of its own), or the pair's id."""
        return named(user, lease=self.cleaned_data["lease"], pair=self.cleaned_data["pair"])

    def problems(self) -> str:
        return " ".join(f"{name}: {' '.join(errors)}" for name, errors in self.errors.items())


class LabelForm(LeaseForm):
    side = forms.ChoiceField(choices=SIDES)
    strength = forms.ChoiceField(choices=[("", "—"), ("slight", "slight"), ("clear", "clear")], required=False)
    comment = forms.CharField(required=False, max_length=5000)
    seconds = forms.FloatField(required=False, min_value=0, max_value=86400)


class ImportForm(forms.Form):
    kind = forms.ChoiceField(choices=ImportJob.KINDS)
    file = forms.FileField(help_text="JSONL, CSV or Parquet.")
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="auto", help_text="For preferences.")
    split = forms.ChoiceField(choices=[("train", "train"), ("eval", "eval")], initial="train", help_text="For prompts.")
    tag = forms.CharField(required=False, max_length=100)
    round = forms.IntegerField(required=False, min_value=0, max_value=MAX_NUMBER, help_text="For pairs and preferences. Empty: preferences keep the round their rows name (an export's do).")

    def clean_tag(self):
        value = self.cleaned_data["tag"]
        if not value.isprintable():  # as the importer checks it: refused here, not later by the worker
            raise forms.ValidationError("expected up to 100 printable characters")
        return value

    # the fields each kind reads; another kind's field set to anything but its default is refused by name (a pairs
    # file sent with split=eval and a tag was stored as train, untagged, and the job's record named both)
    APPLIES = {"split": ("prompts",), "tag": ("prompts",), "round": ("pairs", "preferences"),
               "format": ("preferences",)}
    DEFAULTS = {"split": "train", "tag": "", "round": None, "format": "auto"}

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        for name, kinds in self.APPLIES.items():
            if kind and kind not in kinds and name in data and data[name] != self.DEFAULTS[name]:
                self.add_error(name, f"{name} is read for {' and '.join(kinds)} only, not for {kind}: leave it "
                                     f"{'empty' if self.DEFAULTS[name] in ('', None) else repr(self.DEFAULTS[name])}")
        return data

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(f"{upload.name}: {upload.size:,} bytes is over the limit of {limit:,} bytes")
        suffix = "." + upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        kind = SUFFIXES.get(suffix)
        if kind is None:
            raise forms.ValidationError(f"{upload.name}: expected a .jsonl, .csv or .parquet file")
        head = upload.read(4096)
        upload.seek(0)
        if kind == "parquet" and not head.startswith(b"PAR1"):
            raise forms.ValidationError(f"{upload.name}: not a Parquet file")
        if kind != "parquet":
            if b"\x00" in head:
                raise forms.ValidationError(f"{upload.name}: not a text file")
            text = head.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark (Notepad's): the importer reads past it
            if kind == "jsonl" and text.strip() and text.lstrip()[:1] not in (b"{", b"["):
                raise forms.ValidationError(f"{upload.name}: not JSON Lines (rows must be JSON objects)")
        return upload


class RoundForm(forms.Form):
    """?round= of the staff pages: a labelling round's number, or none for all."""

    round = forms.IntegerField(required=False, min_value=0, max_value=MAX_NUMBER)

    def clean_round(self) -> int | None:
        """An unknown round is a typo, not empty figures or an empty download (as export_preferences --round says)."""
        number = self.cleaned_data.get("round")
        if number is not None and not LabellingRound.objects.filter(number=number).exists():
            raise forms.ValidationError(f"no labelling round {number}")
        return number


class ExportForm(RoundForm):
    """The export page's options. A box left unticked is sent as nothing, so the page sends BOX_SHOWN beside its
    boxes: without it (a link, a script) an absent include_automatic means the default, judge labels included, as
    export_preferences and the API have it, not an unticked box."""

    BOX_SHOWN = "boxes_shown"  # the hidden input export.html sends with the form

    format = forms.ChoiceField(
        choices=[(f, "hf (a Hugging Face data set: Parquet and a dataset card, zipped)" if f == "hf" else f)
                 for f in EXPORT_FORMATS], initial="jsonl")
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1,
                                     help_text="Leave out pairs whose majority has a smaller vote share (0 to 1); gold "
                                               "pairs, decided by their known answer, stay in.")
    include_automatic = forms.BooleanField(
        required=False, initial=True, label="Include judge labels",
        help_text="Labels by judges (automatic accounts) count beside people's, as they do in training. Untick to "
                  "export people's labels (and imported ones) only.")
    soft_labels = forms.BooleanField(required=False)
    license = forms.CharField(required=False, max_length=100, initial=DEFAULT_LICENSE,
                              help_text="For hf: the dataset card's licence field, e.g. cc-by-4.0.")

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and "include_automatic" not in data and self.BOX_SHOWN not in data:
            data = data.copy()
            data["include_automatic"] = "on"  # not named: the default (and the box shows ticked if the page is shown)
        super().__init__(data, *args, **kwargs)

    def clean_license(self):
        value = self.cleaned_data["license"].strip() or DEFAULT_LICENSE
        if not value.isprintable():
            raise forms.ValidationError("expected printable characters, e.g. cc-by-4.0")
        return value


MAX_OVERLAP = 20  # labels a pair can need: more than a team would ask for, within what a page can show


class LabellingRoundForm(forms.ModelForm):
    """A labelling round set up from its page: the same fields as the admin, each bounded and checked."""

    class Meta:
        model = LabellingRound
        fields = ["number", *SETTINGS]
        labels = {"labels_per_pair": "Labels per pair (overlap)", "gold_rate": "Gold rate"}
        help_texts = {
            "guidelines": "Shown above every pair of this round (Markdown).",
            "labels_per_pair": "How many people label each pair; more than 1 measures agreement. A change reaches "
                               "the round's pairs: finished pairs come back for the extra labels.",
        }
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 6})}

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user  # who sets a routing judge (None: not a person's request): judges.check_folder_access
        bounds = {"number": (0, MAX_NUMBER), "labels_per_pair": (1, MAX_OVERLAP), "gold_rate": (0, 1),
                  "route_threshold": (0, 1), "audit_share": (0, 1), "close_width": (0, 1)}
        for name, (low, high) in bounds.items():
            field = self.fields[name]
            field.min_value, field.max_value = low, high
            field.validators += [MinValueValidator(low), MaxValueValidator(high)]
            field.widget.attrs.update(min=low, max=high)
        if self.instance.pk:
            self.fields["number"].disabled = True  # pairs and exports name the round by its number
            # Each setting's value as the page showed it goes with the page (a hidden input beside it), so that
            # changed_data, which saving a round writes, is what this person changed: compared with the round as
            # stored when they save, a page opened before another's change wrote its old value back.
            for name in SETTINGS:
                self.fields[name].show_hidden_initial = True

    def clean_guidelines(self) -> str:
        text = self.cleaned_data["guidelines"]
        if len(text) > 20_000:
            raise forms.ValidationError(f"expected up to 20,000 characters, got {len(text):,}")
        return text

    def clean_route_judge(self) -> str:
        path = self.cleaned_data["route_judge"].strip()
        if path:
            try:
                check_judge(path)  # allowed, and arguments it takes: building it may load a model
                if canonical_path(path) != (self.instance.route_judge or ""):  # the stored judge, kept, is not re-asked
                    check_folder_access(path, self.user)
            except JudgeError as exc:
                raise forms.ValidationError(str(exc)) from None
            # stored as the judge's labels are kept (annotate.judging.judge_key): routing matches the two as text, and
            # "judges.rules.length_target" here never routed the labels of "judges.rules:length_target"
            path = canonical_path(path)
        return path

    def clean_close_width(self):
        value = self.cleaned_data["close_width"]
        if value is not None and value <= 0:
            raise forms.ValidationError("expected a width above 0 (e.g. 0.15), or empty for never")
        return value


class GoldPairForm(forms.Form):
    """Make a pair a gold pair of the round, with the answer that is right."""

    pair = forms.IntegerField(min_value=1, max_value=MAX_ID, label="Pair id")
    answer = forms.ChoiceField(choices=[(A, "answer a"), (B, "answer b")], label="Right answer")
