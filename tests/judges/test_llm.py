"""The LLM judge asks in both orders: swapping the answers mirrors its verdict, and disagreeing orders are a tie."""
import pytest

from judges import load_judge
from judges.llm import LLMJudge


@pytest.fixture(scope="module")
def judge(tiny_model_dir, dtype):
    return load_judge(f"judges.llm:LLMJudge?model_dir={tiny_model_dir}", dtype=dtype)


ANSWERS = ["Paris.", "The capital of France is Paris, on the Seine.", "I do not know.", "Lyon, I think."]


def test_swapping_the_answers_mirrors_the_verdict(judge):
    mirror = {"a": "b", "b": "a", "tie": "tie"}
    for first in ANSWERS:
        for second in ANSWERS:
            assert judge("What is the capital of France?", second, first) == mirror[
                judge("What is the capital of France?", first, second)
            ]


def test_orders_that_disagree_give_a_tie(judge, monkeypatch):
    # a judge that always prefers whatever it reads first is pure position bias: every verdict is a tie
    monkeypatch.setattr(LLMJudge, "first_is_better", lambda self, prompt, first, second: 0.9)
    assert {judge("q", a, b) for a in ANSWERS for b in ANSWERS} == {"tie"}
    monkeypatch.setattr(LLMJudge, "first_is_better", lambda self, prompt, first, second: 0.9 if "Paris" in first else 0.2)
    assert judge("q", ANSWERS[1], ANSWERS[2]) == "a" and judge("q", ANSWERS[2], ANSWERS[1]) == "b"


def test_a_folder_without_a_checkpoint_is_a_clear_error(tmp_path):
    from judges import JudgeError

    with pytest.raises(JudgeError, match="holds no checkpoint"):
        load_judge(f"judges.llm:LLMJudge?model_dir={tmp_path}")


def test_a_base_that_is_no_local_checkpoint_is_refused_before_any_load(tmp_path, tiny_model_dir):
    """A base_dir that is no folder here would be looked up on a model hub by from_pretrained: refused at once."""
    from judges import JudgeError

    with pytest.raises(JudgeError, match="base_dir HuggingFaceTB/SmolLM2-135M holds no full checkpoint"):
        load_judge(f"judges.llm:LLMJudge?model_dir={tiny_model_dir}&base_dir=HuggingFaceTB/SmolLM2-135M")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"}')
    with pytest.raises(JudgeError, match="holds a LoRA adapter: give the folder of its base model as base_dir"):
        load_judge(f"judges.llm:LLMJudge?model_dir={adapter}")


def test_an_llm_judge_over_a_registered_version(db, tiny_model_dir):
    from generation.services import register_version
    from judges import JudgeError

    register_version("base", tiny_model_dir)
    judge = load_judge("judges.llm:for_version?name=base")
    assert judge.model_dir == str(tiny_model_dir)
    assert judge("q", "yes", "no") in ("a", "b", "tie")
    with pytest.raises(JudgeError, match="no model version named 'round-7'"):
        load_judge("judges.llm:for_version?name=round-7")


def test_a_question_longer_than_the_judges_context_is_refused_not_judged(judge):
    """The request was given to the model whole, past its context (the tiny model's 512 positions): a verdict of
    noise from a rotary model, an index error from one of learned positions (found by an outside review)."""
    with pytest.raises(ValueError, match=r"the judge's question is \d+ tokens .* over its model's context of 512"):
        judge("word " * 3000, "a.", "b.")
    assert judge("word " * 50, "a.", "b.") in ("a", "b", "tie")


def test_a_lora_version_without_its_base_is_a_clear_error(db, tiny_model_dir):
    from generation.models import ModelVersion
    from judges import JudgeError

    ModelVersion.objects.create(name="lora1", path=str(tiny_model_dir), kind=ModelVersion.LORA)
    with pytest.raises(JudgeError, match="'lora1' is a LoRA adapter without the full checkpoint it applies to: set "
                                         "its base in the admin"):
        load_judge("judges.llm:for_version?name=lora1")
