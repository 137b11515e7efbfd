"""The form behind "run N rounds with judge J": used alike by the loop page and the admin."""
from urllib.parse import urlencode

from django import forms
from django.conf import settings

from generation.models import ModelVersion
from judges import QUERY_SAFE
from loop import presets
from loop.models import LoopRun

BUILT_IN_JUDGES = [
    ("judges.rules:length_target", "rule: nearest to 40 words, never degenerate"),
    ("judges.rules:prefer_shorter", "rule: shorter sound answer"),
    ("judges.rules:prefer_list", "rule: more list items"),
    ("judges.rules:not_degenerate", "rule: sound over degenerate only"),
]


def judge_choices() -> list[tuple[str, str]]:
    """Judges listed in settings (PREFLOOP_JUDGES), the built-in rules, and an LLM judge over each version."""
    listed = [(path, path) for path in settings.PREFLOOP_JUDGES]
    # the name URL-encoded, as load_judge decodes it: "sft+dpo" read as "sft dpo", "r&d" as "r", "v%41" as "vA"
    llm = [(f"judges.llm:for_version?{urlencode({'name': name}, safe=QUERY_SAFE)}", f"LLM judge: version {name}")
           for name in ModelVersion.objects.values_list("name", flat=True)]
    seen, choices = set(), []
    for value, label in listed + BUILT_IN_JUDGES + llm:
        if value not in seen:
            seen.add(value)
            choices.append((value, label))
    return choices


class LoopRunForm(forms.ModelForm):
    preset = forms.ChoiceField(choices=presets.choices(), initial=presets.DEFAULT.name, required=False,
                               help_text="What each round samples, how it pairs and what it trains on.")
    judge = forms.ChoiceField(choices=(), help_text="Labels each round's pairs (with the spin preset, which labels nothing, it evaluates).")
    eval_judge = forms.ChoiceField(choices=(), required=False,
                                   help_text="Votes on each round's answers against base; a different judge from the "
                                             "one that labels keeps its quirks from being rewarded and then confirmed.")

    class Meta:
        model = LoopRun
        fields = ["rounds", "pairs", "judge", "eval_judge", "tag", "eval_limit", "seed"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["judge"].choices = judge_choices()
        self.fields["eval_judge"].choices = [("", "the same judge"), *judge_choices()]
        self.fields["rounds"].min_value = 1
        self.fields["pairs"].min_value = 1

    def clean_preset(self) -> str:
        return self.cleaned_data.get("preset") or presets.DEFAULT.name
