"""The LLM judge a loop or generation form offers over each version judges with that version, whatever its name
holds: the name went into the judge path unencoded, and "sft+dpo" loaded "sft dpo", "r&d" loaded "r"."""
import pytest

from generation.services import register_version
from judges import load_judge
from loop.forms import LoopRunForm, judge_choices

pytestmark = pytest.mark.django_db


def _checkpoint(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text("")  # registered, never loaded
    return folder


def _offered(name: str) -> str:
    return {label: value for value, label in judge_choices()}[f"LLM judge: version {name}"]


@pytest.mark.parametrize("name", ["sft+dpo", "r&d", "v%41", "a b", "x=1", "é#?"])
def test_the_offered_llm_judge_loads_the_version_it_names(tmp_path, name):
    register_version(name, _checkpoint(tmp_path / "it"))
    assert load_judge(_offered(name)).model_dir == str(tmp_path / "it")


def test_a_version_named_like_another_encoded_is_not_mistaken_for_it(tmp_path):
    register_version("sft 2", _checkpoint(tmp_path / "spaced"), make_current=False)
    register_version("sft+2", _checkpoint(tmp_path / "plus"))
    assert load_judge(_offered("sft+2")).model_dir == str(tmp_path / "plus")
    assert load_judge(_offered("sft 2")).model_dir == str(tmp_path / "spaced")


def test_the_loop_form_accepts_the_judge_it_offers(tmp_path):
    register_version("sft+dpo", _checkpoint(tmp_path / "it"))
    form = LoopRunForm({"rounds": 1, "pairs": 4, "judge": _offered("sft+dpo"), "eval_judge": "", "tag": "",
                        "eval_limit": 8, "seed": 0})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["judge"] == "judges.llm:for_version?name=sft%2Bdpo"
