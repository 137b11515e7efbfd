"""The form behind "Generate pairs": the same fields as SamplingConfig and the job's prompt selection."""
from django import forms

from loop.forms import judge_choices

from .backends.base import MAX_SEED, MAX_TEMPERATURE, SamplingConfig
from .models import ModelVersion

_defaults = SamplingConfig()


class GenerateForm(forms.Form):
    version = forms.ModelChoiceField(queryset=ModelVersion.objects.all(), required=False,
                                     empty_label="current version")
    prompts = forms.IntegerField(min_value=1, max_value=100_000, initial=32)
    samples = forms.IntegerField(min_value=2, max_value=64, initial=_defaults.n, label="Samples per prompt (K)")
    split = forms.ChoiceField(choices=[("train", "train"), ("eval", "eval")], initial="train")
    tag = forms.CharField(required=False, max_length=100)
    pairing = forms.ChoiceField(choices=[("random", "random"), ("most_different", "most different"),
                                         ("best_worst", "best against worst (mean log-prob)"),
                                         ("judge", "best against worst by a judge"),
                                         ("none", "none: samples only, for a self-play (SPIN) round")],
                                initial="random")
    judge = forms.ChoiceField(choices=(), required=False, help_text="Ranks the samples when pairing is by a judge.")
    with_reference = forms.BooleanField(required=False, label="Only prompts with a reference answer",
                                        help_text="For a self-play (SPIN) round, with pairing none.")
    temperature = forms.FloatField(min_value=0.0, max_value=MAX_TEMPERATURE, initial=_defaults.temperature,
                                   help_text="0 samples greedily (every sample the same).")
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=_defaults.top_p)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=8192, initial=_defaults.max_new_tokens)
    seed = forms.IntegerField(min_value=0, max_value=MAX_SEED, initial=0)

    def __init__(self, *args, **kwargs):

        super().__init__(*args, **kwargs)
        self.fields["judge"].choices = [("", "none")] + judge_choices()

    def clean(self):
        data = super().clean()
        if data.get("pairing") == "judge" and not data.get("judge"):
            self.add_error("judge", "Choose the judge that ranks the samples.")
        elif data.get("pairing") != "judge":
            data["judge"] = ""
        if not self.errors:
            try:  # every rule of SamplingConfig, shown on the page rather than raised by the view
                self.sampling_config()
            except ValueError as exc:
                self.add_error(None, str(exc))
        return data

    def sampling_config(self) -> SamplingConfig:
        d = self.cleaned_data
        return SamplingConfig(n=d["samples"], temperature=d["temperature"], top_p=d["top_p"],
                              max_new_tokens=d["max_new_tokens"], seed=d["seed"])
