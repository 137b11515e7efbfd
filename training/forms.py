"""The form behind "Start a training round": the starting version, the reference, and the DPOConfig fields."""
import dataclasses

from django import forms

from generation.models import ModelVersion

from .dpo.config import DPOConfig
from .models import TrainingRun

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
            kind = _TYPES.get(type(value), forms.CharField)
            self.fields[field.name] = kind(initial=value, required=kind is not forms.BooleanField,
                                           label=field.name.replace("_", " "))

    def params(self) -> dict:
        return {f.name: self.cleaned_data[f.name] for f in dataclasses.fields(DPOConfig)}
