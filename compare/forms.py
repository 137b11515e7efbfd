"""The form that starts a comparison set: two versions and a prompt set (the eval split, or one typed prompt)."""
from django import forms

from generation.backends.base import MAX_SEED
from generation.models import ModelVersion

from .services import MAX_PROMPTS


class StartForm(forms.Form):
    EVAL, TYPED = "eval", "typed"
    version_a = forms.ModelChoiceField(ModelVersion.objects.order_by("round", "created"), label="Version A")
    version_b = forms.ModelChoiceField(ModelVersion.objects.order_by("round", "created"), label="Version B")
    prompts = forms.ChoiceField(
        choices=[(EVAL, "the eval split"), (TYPED, "one prompt typed here")], initial=EVAL,
        widget=forms.RadioSelect, label="Prompts",
    )
    limit = forms.IntegerField(min_value=1, max_value=MAX_PROMPTS, initial=8, label="How many eval prompts")
    # as long as POST /api/v1/compare takes it (api/fields.Text): the page stored a prompt of any size
    text = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea(attrs={"rows": 3}), label="Prompt")
    blind = forms.BooleanField(
        required=False, initial=True, label="Blind: hide which answer is which version until I vote (uncheck for a plain side by side)"
    )
    seed = forms.IntegerField(min_value=0, max_value=MAX_SEED, initial=0, label="Seed")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=128, label="Longest answer (tokens)")

    def clean(self):
        data = super().clean()
        if data.get("version_a") and data.get("version_a") == data.get("version_b"):
            self.add_error("version_b", "Choose a different version from A.")
        if data.get("prompts") == self.TYPED and not (data.get("text") or "").strip():
            self.add_error("text", "Type a prompt, or choose the eval split.")
        return data
