"""PREFLOOP_DTYPE: one setting for sampling, training, evaluation and judges, resolved on the machine by the same
rule, shown on the pages; a bad value stops the app at start with a message naming it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefcore import hardware

ROOT = Path(__file__).resolve().parent.parent
AVX2_ONLY = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_a_bad_value_stops_the_app_naming_the_setting(tmp_path):
    env = {**os.environ, "PREFLOOP_DTYPE": "int8", "PREFLOOP_DATA_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "prefloop.settings"}
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "PREFLOOP_DTYPE='int8': expected auto, float32 or bfloat16" in done.stderr


@pytest.mark.parametrize("cpuinfo, auto", [(AVX2_ONLY, "float32 (no native bf16 on this CPU: bf16 would be emulated)"),
                                           (AMX, "bfloat16 (native bf16 on this CPU)")])
def test_auto_follows_the_cpu_and_a_forced_choice_says_so(monkeypatch, cpuinfo, auto):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo)
    assert hardware.describe_dtype("auto", "cpu") == auto
    assert hardware.describe_dtype("float32", "cpu") == "float32 (forced by PREFLOOP_DTYPE)"
    assert hardware.resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be 'auto' or one of .*got 'int3'"):
        hardware.resolve_dtype("int3")


@pytest.fixture
def base(db, tiny_model_dir):
    from generation import services as gen

    gen.release_backends()
    yield gen.register_version("base", tiny_model_dir)
    gen.release_backends()


@pytest.mark.parametrize("choice, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_sampling_follows_the_setting(base, settings, choice, expected):
    from generation import services as gen

    settings.PREFLOOP_DTYPE = choice
    backend = gen.backend_for(base)
    assert backend.dtype == expected and next(backend.model.parameters()).dtype == expected


def test_training_fixes_auto_to_the_setting_for_every_process(base, settings):
    """The run's "auto" becomes the setting's dtype in its params, which the run's processes (accelerate launch
    reads the config file) and its measurement use; a dtype set on the run itself wins."""
    from training import services as train

    settings.PREFLOOP_DTYPE = "bfloat16"
    own = train.start_training_run(params={"epochs": 1, "dtype": "float32"}, enqueue=False)
    assert train._run_config(own).dtype == "float32"
    train.cancel_training_run(own)
    run = train.start_training_run(params={"epochs": 1}, enqueue=False)
    assert run.params["dtype"] == "auto"
    config = train._run_config(run)
    run.refresh_from_db()
    assert config.dtype == "bfloat16" and run.params["dtype"] == "bfloat16"
    assert "computing in bfloat16 (forced by PREFLOOP_DTYPE)" in run.log
    settings.PREFLOOP_DTYPE = "float32"  # a retried attempt keeps what the run started with
    assert train._run_config(run).dtype == "bfloat16"


def test_evaluation_scores_in_the_settings_dtype(base, settings, monkeypatch):
    from generation.models import Prompt, Response
    from training import evaluation

    settings.PREFLOOP_DTYPE = "float32"
    prompt = Prompt.objects.create(text="hi", split="eval")
    answer = Response.objects.create(prompt=prompt, version=base, text="hello", token_count=1)
    seen = []
    monkeypatch.setattr("training.dpo.trainer.compute_kl",
                        lambda path, reference, pairs, config, should_stop=None, chosen_ids=None:
                        seen.append(config.dtype) or [[0.0]] * len(pairs))
    evaluation.mean_kl(base, base, {prompt.pk: answer})
    assert seen == ["float32"]


def test_judges_run_in_the_settings_dtype(base, settings, tiny_model_dir):
    from compare import services as compare
    from judges import load_judge

    settings.PREFLOOP_DTYPE = "float32"
    judge = load_judge("judges.llm:for_version?name=base")
    assert judge.dtype == "float32"
    judge("q", "yes", "no")
    assert next(judge._model.parameters()).dtype == torch.float32
    settings.PREFLOOP_DTYPE = "bfloat16"
    assert compare.load_judge(f"judges.llm:LLMJudge?model_dir={tiny_model_dir}").dtype == "bfloat16"
    # the name may set its own; a judge that takes no dtype is left alone
    assert load_judge(f"judges.llm:LLMJudge?model_dir={tiny_model_dir}&dtype=float32", dtype="bfloat16").dtype == "float32"
    assert load_judge("judges.rules:LengthTarget?target_words=3&tie_words=0", dtype="bfloat16")("p", "a b c", "a") == "a"


@pytest.mark.parametrize("page", ["/generation/", "/training/"])
def test_the_pages_say_which_dtype_models_run_in(client, staff, settings, page):
    client.force_login(staff)
    settings.PREFLOOP_DTYPE = "float32"
    assert "float32 (forced by PREFLOOP_DTYPE)" in client.get(page).content.decode()
    settings.PREFLOOP_DTYPE = "auto"
    assert hardware.describe_dtype("auto") in client.get(page).content.decode()
