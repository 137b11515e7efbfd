"""The form that starts a comparison set: two versions and a prompt set (the eval split, or one typed prompt)."""
from django import forms

from generation.backends.base import MAX_SEED
from generation.models import ModelVersion

from .services import MAX_PROMPTS

# a typed prompt's length, as POST /api/v1/compare takes it (api/fields.Text): the page stored a prompt of any size
MAX_TYPED = 20_000


class StartForm(forms.Form):
    EVAL, TYPED = "eval", "typed"
    version_a = forms.ModelChoiceField(ModelVersion.objects.order_by("round", "created"), label="Version A")
    version_b = forms.ModelChoiceField(ModelVersion.objects.order_by("round", "created"), label="Version B")
    prompts = forms.ChoiceField(
        choices=[(EVAL, "the eval split"), (TYPED, "one prompt typed here")], initial=EVAL,
        widget=forms.RadioSelect, label="Prompts",
    )
    limit = forms.IntegerField(min_value=1, max_value=MAX_PROMPTS, initial=8, label="How many eval prompts")
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "maxlength": MAX_TYPED}),
                           label="Prompt")
    blind = forms.BooleanField(
        required=False, initial=True, label="Blind: hide which answer is which version until I vote (uncheck for a plain side by side)"
    )
    seed = forms.IntegerField(min_value=0, max_value=MAX_SEED, initial=0, label="Seed")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=128, label="Longest answer (tokens)")

    def clean(self):
        data = super().clean()
        if data.get("version_a") and data.get("version_a") == data.get("version_b"):
            self.add_error("version_b", "Choose a different version from A.")
        typed = (data.get("text") or "").replace("\r\n", "\n")  # a browser counts a line break as one character
        if data.get("prompts") == self.TYPED and not typed.strip():
            self.add_error("text", "Type a prompt, or choose the eval split.")
        elif data.get("prompts") == self.TYPED and len(typed) > MAX_TYPED:  # the eval split ignores a text left here
            self.add_error("text", f"Ensure this value has at most {MAX_TYPED} characters (it has {len(typed)}).")
        return data
