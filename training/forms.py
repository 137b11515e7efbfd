"""The form behind "Start a training round": the starting version, the reference, and the DPOConfig fields, each
with its range (DPOConfig's BOUNDS) as help text and checked by DPOConfig itself."""
import dataclasses
import re

from django import forms

from generation.models import ModelVersion

from .dpo.config import BOUNDS, CHOICES, HELP, DPOConfig
from .models import TrainingRun
from .services import MEASURED, MIN_NOISE_EVIDENCE, TrainingError, measured_label_agreement

_TYPES = {float: forms.FloatField, int: forms.IntegerField, bool: forms.BooleanField, str: forms.CharField}


class TrainingRunForm(forms.Form):
    input_version = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False,
                                           empty_label="current version", label="Start from")
    reference_choice = forms.ChoiceField(choices=TrainingRun._meta.get_field("reference_choice").choices,
                                         initial=TrainingRun.REF_BASE, label="Reference")
    data_choice = forms.ChoiceField(choices=TrainingRun._meta.get_field("data_choice").choices,
                                    initial=TrainingRun.DATA_ALL, label="Train on")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = DPOConfig()
        for field in dataclasses.fields(DPOConfig):
            value = getattr(defaults, field.name)
            bound = BOUNDS.get(field.name)
            rule = f" {str(bound).capitalize()}{f' ({bound.why})' if bound.why else ''}." if bound else ""
            help_text = (HELP.get(field.name, "") + rule).strip()
            label = field.name.replace("_", " ")
            if field.name in CHOICES:
                self.fields[field.name] = forms.ChoiceField(choices=[(c, c) for c in CHOICES[field.name]],
                                                            initial=value, label=label, help_text=help_text)
                continue
            kind = _TYPES.get(type(value), forms.CharField)
            self.fields[field.name] = kind(initial=value, required=kind is not forms.BooleanField and value != "",  # empty text: none
                                           label=label, help_text=help_text)
            if field.name == "label_agreement":
                self.fields["measure_agreement"] = forms.BooleanField(
                    required=False, label="measure label agreement",
                    help_text="Set label agreement from how often people's labels agreed so far (pairs two people "
                              f"decided, and gold pairs), given at least {MIN_NOISE_EVIDENCE} comparisons to measure it on; "
                              "the run's log says what it measured.")

    measured = ""  # with "measure label agreement": the run log's line on what it was measured on
    _agreement: float | None = None  # and the number measured

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        params = self.params()
        if data.get("measure_agreement"):
            if data["label_agreement"] != DPOConfig().label_agreement:
                self.add_error("measure_agreement", "give a label agreement or measure it, not both")
                return data
            try:  # measured once a request: params() and `measured` then carry the number and what it came from
                params, self.measured = measured_label_agreement(params)
                self._agreement = params["label_agreement"]
            except TrainingError as exc:
                self.add_error("measure_agreement", str(exc).removeprefix("training settings: "))
                return data
        try:
            DPOConfig.from_dict(params)
        except ValueError as exc:  # "DPOConfig.<field>=<value>: <expected>": shown beside the field
            found = re.match(r"DPOConfig\.(\w+)=", str(exc))
            name = found[1] if found and found[1] in self.fields else None
            if name == "label_agreement" and data.get("measure_agreement"):
                name = "measure_agreement"  # the number came from the measurement, not from the field
            self.add_error(name, str(exc).split(": ", 1)[-1] if name else str(exc))
        return data

    def params(self) -> dict:
        params = {f.name: self.cleaned_data[f.name] for f in dataclasses.fields(DPOConfig)}
        if self.cleaned_data.get("measure_agreement"):
            params["label_agreement"] = MEASURED if self._agreement is None else self._agreement
        return params
