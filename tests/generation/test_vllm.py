"""The vLLM backend. Everywhere: the backend over a stand-in `vllm` (tests/generation/fake_vllm.py) that makes
vLLM 0.33.0's own checks and answers greedy requests from the checkpoint itself, so the mapping of settings, the
samples, the LoRA rank, the context length and the canary are checked on CPU. On a CUDA GPU with vllm installed
(requirements-gpu.txt): the same contract on the real engine and model."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from generation.backends.hf import HFBackend
from generation.backends.vllm import (
    CANARY_PROMPTS,
    LORA_RANKS,
    CanaryMismatch,
    ReferenceToken,
    VLLMBackend,
    VLLMRequestFailed,
    engine_lora_rank,
    first_canary_difference,
)
from prefcore.chat import prompt_token_ids, response_token_ids
from tests.generation import fake_vllm
from tests.generation.fake_vllm import Scripted, VLLMValidationError
from tests.tiny import build_tiny_model

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.", "Write a haiku about tea."]
needs_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (requirements-gpu.txt)"),
]


@pytest.fixture
def fake(monkeypatch):
    return fake_vllm.install(monkeypatch)


def _copy_model(src, dst, **generation_config):
    shutil.copytree(src, dst)
    if generation_config:
        path = dst / "generation_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **generation_config}))
    return dst


def _adapter(model_dir, out, r: int, *, rank_pattern: dict | None = None):
    """A real PEFT adapter over the tiny model (random, so that it changes the answers)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(r)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        rank_pattern=rank_pattern or {})
    get_peft_model(base, config).save_pretrained(out)
    return out


# ---- the stand-in refuses what vLLM 0.33.0 refuses ------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": 2.5}, "temperature must be in [0, 2]"),
    ({"temperature": 0.0, "n": 2}, "n must be 1 when using greedy sampling"),
    ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"n": 0}, "n must be at least 1"),
    ({"logprobs": -2}, "logprobs must be non-negative or -1"),
])
def test_stand_in_sampling_params_refuse_what_vllm_refuses(kwargs, words):
    with pytest.raises(VLLMValidationError, match=words.replace("[", r"\[").replace("(", r"\(")):
        fake_vllm.SamplingParams(**kwargs)
    with pytest.raises(TypeError, match="best_of"):
        fake_vllm.SamplingParams(best_of=2)
    assert fake_vllm.SamplingParams(temperature=0.005).temperature == 0.01  # vLLM raises it, with a warning
    greedy = fake_vllm.SamplingParams(temperature=0.0, top_p=0.5)
    assert (greedy.top_p, greedy.n) == (1.0, 1)


def test_stand_in_engine_refuses_what_vllm_refuses(fake, tiny_model_dir):
    with pytest.raises(ValueError, match=r"max_model_len \(4096\) is greater than the derived max_model_len"):
        fake(str(tiny_model_dir), max_model_len=4096)  # the tiny model has 512 positions
    with pytest.raises(ValueError, match="max_lora_rank"):
        fake(str(tiny_model_dir), enable_lora=True, max_lora_rank=12)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_lora_ranks'"):
        fake(str(tiny_model_dir), max_lora_ranks=16)


# ---- settings both backends refuse alike ---------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [2.5, 5.0, 0.005])
def test_temperatures_vllm_would_refuse_or_change_are_refused_for_every_backend(temperature):
    with pytest.raises(ValueError, match="'temperature': expected 0 \\(greedy\\) or a number from 0.01 to 2"):
        SamplingConfig(temperature=temperature)
    for fine in (0, 0.01, 2.0):
        fake_vllm.SamplingParams(temperature=float(fine), n=1)  # what the settings allow, vLLM takes
        SamplingConfig(temperature=fine)


@pytest.mark.django_db
def test_the_generation_page_refuses_a_temperature_above_two(client, staff):
    from generation.models import GenerationJob

    client.force_login(staff)
    form = {"prompts": 2, "samples": 2, "split": "train", "pairing": "random", "temperature": 2.5, "top_p": 1.0,
            "max_new_tokens": 8, "seed": 0}
    page = client.post("/generation/", form)
    assert page.status_code == 200 and "less than or equal to 2" in page.content.decode()
    page = client.post("/generation/", dict(form, temperature=0.005))
    assert page.status_code == 200 and "0 (greedy) or a number from 0.01 to 2" in page.content.decode()
    assert not GenerationJob.objects.exists()


def test_greedy_with_several_samples_is_one_answer_copied_as_in_the_hf_backend(fake, tiny_model_dir):
    config = SamplingConfig(n=3, temperature=0, max_new_tokens=10)
    backend = VLLMBackend(str(tiny_model_dir), dtype="float32", canary=False)
    out = backend.generate(PROMPTS, config, seeds=[1, 2, 3])
    _, params, _ = fake.instances[-1].calls[-1]
    assert [p.n for p in params] == [1, 1, 1]  # what vLLM accepts for greedy
    hf = HFBackend(str(tiny_model_dir), dtype="float32").generate(PROMPTS, config, seeds=[1, 2, 3])
    for row, hf_row in zip(out, hf, strict=True):
        assert len(row) == 3 and all(s.token_ids == row[0].token_ids for s in row)
        assert row[0] is not row[1] and row[0].token_ids is not row[1].token_ids  # copies, not one object thrice
        assert [s.token_ids for s in row] == [s.token_ids for s in hf_row]
        assert [s.finish_reason for s in row] == [s.finish_reason for s in hf_row]
        assert row[0].logp_sum == pytest.approx(hf_row[0].logp_sum, abs=1e-3)


# ---- samples -----------------------------------------------------------------------------------------------------


def test_settings_reach_the_engine_and_samples_come_back(fake, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), tensor_parallel_size=2, gpu_memory_utilization=0.5, canary=False)
    engine = fake.instances[0]
    assert engine.engine_kwargs["tensor_parallel_size"] == 2 and engine.engine_kwargs["gpu_memory_utilization"] == 0.5
    assert engine.args["logprobs_mode"] == "raw_logprobs"
    seen = []
    config = SamplingConfig(n=2, temperature=0.7, top_p=0.9, max_new_tokens=6)
    out = backend.generate(PROMPTS, config, seeds=[11, 12, 13], on_progress=lambda d, t: seen.append((d, t)))
    prompts, params, lora = engine.calls[-1]
    assert [p["prompt_token_ids"] for p in prompts] == [prompt_token_ids(backend.tokenizer, p) for p in PROMPTS]
    assert [(p.n, p.temperature, p.top_p, p.max_tokens, p.seed, p.logprobs) for p in params] == [
        (2, 0.7, 0.9, 6, s, 0) for s in (11, 12, 13)]
    assert lora is None and seen[-1] == (6, 6)
    first, second = out[0]
    assert (first.token_ids, first.finish_reason, first.logp_sum) == ([5, 6, 2], "stop", -1.5)
    assert (second.token_ids, second.finish_reason) == ([5, 6, 7, 8, 9, 10], "length")
    assert first.text == backend.tokenizer.decode([5, 6], skip_special_tokens=True)


def test_progress_moves_as_each_prompt_finishes_and_answers_keep_prompt_order(fake, tiny_model_dir):
    """The engine reports requests as they end, the last added first here: progress moves per prompt (it moved once
    per chunk of 256 prompts, so a job of fewer prompts showed nothing until its end) and the answers come back in
    the prompts' order."""
    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    fake.script = staticmethod(lambda i, j, p: Scripted([5 + i, 6 + j]))
    seen, budget = [], []
    out = backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=6), on_progress=lambda d, t: seen.append((d, t)),
                           on_tokens=lambda d, t: budget.append((d, t)))
    assert seen == [(2, 6), (4, 6), (6, 6)] and budget == [(12, 36), (24, 36), (36, 36)]
    assert [[s.token_ids for s in row] for row in out] == [[[5 + i, 6], [5 + i, 7]] for i in range(3)]
    assert fake.instances[0].llm_engine.steps == 3


def test_a_cancel_stops_between_engine_steps_and_aborts_what_is_left(fake, tiny_model_dir):
    """A Cancel was seen only between chunks of 256 prompts: a job of fewer prompts ran to its end."""
    from generation.backends.base import GenerationCancelled

    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    engine = fake.instances[0].llm_engine
    asked = []

    def should_stop():
        asked.append(engine.steps)
        return engine.steps == 1  # after the first step: one prompt of three has finished
    with pytest.raises(GenerationCancelled):
        backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=6), should_stop=should_stop)
    assert asked == [0, 0, 1] and engine.steps == 1  # before the chunk, then before each step
    assert len(engine.aborted) == 2 and not engine.pending  # the two unfinished requests, by their internal ids
    assert all(rid.split("-")[0].isdigit() for rid in engine.aborted)
    # the engine holds nothing of the stopped call: the next one answers its own prompts only
    assert len(backend.generate(PROMPTS[:1], SamplingConfig(n=2, max_new_tokens=6))) == 1


def test_an_engine_step_that_fails_aborts_the_chunks_requests_and_raises(fake, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    engine = fake.instances[0].llm_engine

    def fail_on_second(eng):
        if eng.steps == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    fake_vllm.FakeEngine.before_step = staticmethod(fail_on_second)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=6))
    assert len(engine.aborted) == 2 and not engine.pending


@pytest.mark.parametrize("reason", ["abort", "error", "repetition"])
def test_a_request_vllm_aborts_or_fails_raises_instead_of_passing_for_length(fake, tiny_model_dir, reason):
    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    fake.script = staticmethod(lambda i, j, p: Scripted([5, 6], reason if i == 1 else None))
    with pytest.raises(VLLMRequestFailed, match=f"prompt 1, sample 0: vLLM ended the request with '{reason}'"):
        backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=6))


def test_a_sample_stopped_by_any_eos_id_of_the_model_is_recorded_as_sampled(fake, tiny_model_dir, tmp_path):
    """vLLM stops on the tokenizer's EOS (2) and on generation_config's eos_token_id (here also 0, <|endoftext|>)."""
    model = _copy_model(tiny_model_dir, tmp_path / "two-eos", eos_token_id=[2, 0])
    backend = VLLMBackend(str(model), canary=False)
    assert backend.eos_ids == {0, 2}
    fake.script = staticmethod(lambda i, j, p: Scripted([5, 6, 0, 7] if j == 0 else [8, 2]))
    first, second = backend.generate(PROMPTS[:1], SamplingConfig(n=2, max_new_tokens=6))[0]
    assert (first.token_ids, first.finish_reason) == ([5, 6, 0], "stop")  # the id that stopped it, kept
    assert (second.token_ids, second.finish_reason) == ([8, 2], "stop")
    assert first.text == backend.tokenizer.decode([5, 6], skip_special_tokens=True)
    # training normalises: the text, then the tokenizer's EOS, whichever EOS id ended the sample
    tokens = response_token_ids(backend.tokenizer, first.text)
    assert tokens[-1] == backend.tokenizer.eos_token_id == 2 and 0 not in tokens


def test_a_stop_on_a_token_that_is_no_eos_of_the_model_is_refused(fake, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    fake.script = staticmethod(lambda i, j, p: Scripted([5, 6], "stop"))
    with pytest.raises(VLLMRequestFailed, match=r"stopped on token 6, which is not an EOS id of the model \(\[2\]\)"):
        backend.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=6))


# ---- context length and LoRA rank ----------------------------------------------------------------------------


def test_the_context_is_the_models_own(fake, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), canary=False)
    assert "max_model_len" not in fake.instances[0].engine_kwargs  # vLLM derives it
    assert backend.max_model_len == 512  # the tiny model's max_position_embeddings, as vLLM derives it
    long_prompt = "word " * 300
    with pytest.raises(ValueError, match="the prompt 'word word .*…' is .* tokens: with max_new_tokens 300 that exceeds the model's context of 512"):
        backend.generate([long_prompt], SamplingConfig(n=1, max_new_tokens=300))
    shorter = VLLMBackend(str(tiny_model_dir), max_model_len=256, canary=False)
    assert shorter.max_model_len == 256
    # what a job asks before sampling, to leave such a prompt out (generation.services): the engine's own context
    assert list(backend.unfit([long_prompt, "hi"], 300)) == [0]
    assert "exceeds the model's context of 512" in backend.unfit([long_prompt], 300)[0]
    middle = "word " * 60  # about 265 tokens: fits 512 with 100 new tokens, not 256
    assert backend.unfit([middle], 100) == {} and list(shorter.unfit([middle], 100)) == [0]


@pytest.mark.parametrize("r, engine_rank", [(1, 1), (8, 8), (12, 16), (33, 64), (100, 128), (300, 320), (512, 512)])
def test_the_engine_lora_rank_fits_the_adapter(fake, tiny_model_dir, tmp_path, r, engine_rank):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": r, "target_modules": ["q_proj"]}))
    backend = VLLMBackend(str(tiny_model_dir), adapter_path=str(adapter), canary=False)
    assert fake.instances[-1].args["max_lora_rank"] == engine_rank and engine_rank in LORA_RANKS
    assert fake.instances[-1].args["enable_lora"] is True
    backend.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=3))  # the stand-in checks the rank, as vLLM
    if r > 64:  # the old fixed max_lora_rank=64 is refused by the engine
        engine = fake(str(tiny_model_dir), enable_lora=True, max_lora_rank=64)
        with pytest.raises(ValueError, match=f"LoRA rank {r} is greater than max_lora_rank 64"):
            engine.generate([{"prompt_token_ids": [1, 2]}], fake_vllm.SamplingParams(), lora_request=backend.lora_request)


def test_a_lora_rank_above_vllms_largest_is_refused_naming_the_file(fake, tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"v_proj": 600}}))
    with pytest.raises(ValueError, match=r"adapter/adapter_config.json: LoRA rank 600 is above vLLM's largest "
                                         r"max_lora_rank \(512\)"):
        VLLMBackend(str(tiny_model_dir), adapter_path=str(adapter), canary=False)
    assert fake.instances == []  # refused before any engine starts
    assert engine_lora_rank(321) == 512


@pytest.mark.parametrize("field, value, words", [("use_dora", True, "DoRA"), ("bias", "all", "a bias"),
                                                  ("lora_bias", True, "a LoRA bias"),
                                                  ("modules_to_save", ["lm_head"], "modules_to_save")])
def test_an_adapter_vllm_cannot_serve_is_refused_before_an_engine_starts(fake, tiny_model_dir, tmp_path, field, value,
                                                                          words):
    """vLLM 0.33.0 refuses these adapters inside its engine (lora/peft_helper.py); said here, naming the file."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, field: value}))
    with pytest.raises(ValueError, match=f"adapter_config.json: vLLM cannot serve an adapter with {words}"):
        VLLMBackend(str(tiny_model_dir), adapter_path=str(adapter), canary=False)
    assert fake.instances == []


def test_each_lora_version_gets_a_new_adapter_name_and_a_larger_rank_restarts(fake, tiny_model_dir, tmp_path):
    small = _adapter(tiny_model_dir, tmp_path / "r8", 8)
    backend = VLLMBackend(str(tiny_model_dir), adapter_path=str(small), adapter_name="round-1")
    assert fake.instances[0].args["enable_lora"] is True and fake.instances[0].args["max_lora_rank"] == 8
    first = backend.lora_request
    backend.set_adapter(str(small), "round-1")
    assert backend.lora_request.lora_name != first.lora_name
    assert backend.lora_request.lora_int_id != first.lora_int_id
    assert len(fake.instances) == 1  # the same engine serves the new name
    backend.generate(PROMPTS[:1], SamplingConfig(n=1))
    assert fake.instances[-1].calls[-1][2] is backend.lora_request
    bigger = _adapter(tiny_model_dir, tmp_path / "r32", 32)
    backend.set_adapter(str(bigger), "round-2")
    assert len(fake.instances) == 2 and fake.instances[-1].args["max_lora_rank"] == 32
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        backend.set_adapter(str(tmp_path / "missing"))


# ---- the canary --------------------------------------------------------------------------------------------------


def _tokens(best: list[int], logps: list[float], best_logps: list[float] | None = None) -> list[ReferenceToken]:
    return [ReferenceToken(lp, b, bl) for b, lp, bl in zip(best, logps, best_logps or logps, strict=True)]


def test_canary_comparison_on_plain_data():
    answers = [[5, 6], [7, 8, 9]]
    same = [_tokens([5, 6], [-0.1, -0.2]), _tokens([7, 8, 9], [-0.3, -0.4, -0.5])]
    assert first_canary_difference(answers, [[-0.1, -0.2], [-0.3, -0.4, -0.5]], same, 0.05)[0] is None
    # a near-tie the engine broke the other way: within the tolerance, accepted
    tie = [same[0], _tokens([7, 4, 9], [-0.3, -0.70, -0.5], [-0.3, -0.68, -0.5])]
    assert first_canary_difference(answers, [[-0.1, -0.2], [-0.3, -0.70, -0.5]], tie, 0.05)[0] is None
    # the last answer's third token is not transformers' choice: found, though the first answer agrees
    wrong = [same[0], _tokens([7, 8, 4], [-0.3, -0.4, -3.0], [-0.3, -0.4, -0.1])]
    found, worst = first_canary_difference(answers, [[-0.1, -0.2], [-0.3, -0.4, -3.0]], wrong, 0.05)
    assert found.startswith("canary prompt 2, token 3: the engine chose '9' (id 9) where transformers chooses '4'")
    assert worst == pytest.approx(2.9)
    # the right tokens with log-probs far from transformers': found too
    found, _ = first_canary_difference(answers, [[-0.1, -0.9], [-0.3, -0.4, -0.5]], same, 0.05)
    assert found.startswith("canary prompt 1, token 2 ('6', id 6): log-prob -0.900 in the engine, -0.200")


def test_canary_passes_on_the_weights_on_disk_comparing_like_with_like(fake, tiny_model_dir, tmp_path):
    """Engine in bf16 (vLLM's choice for an fp32 checkpoint), reference in bf16 too; a repetition penalty in the
    model's generation_config applies to neither side; every custom canary prompt is answered and compared."""
    model = _copy_model(tiny_model_dir, tmp_path / "penalised", repetition_penalty=1.8)
    prompts = ("Say something.", "Count to three.")
    backend = VLLMBackend(str(model), canary_prompts=prompts)
    engine = fake.instances[0]
    assert engine.model_config.dtype == torch.bfloat16
    sent, params, _ = engine.calls[0]
    assert [p["prompt_token_ids"] for p in sent] == [prompt_token_ids(backend.tokenizer, p) for p in prompts]
    assert (params[0].temperature, params[0].repetition_penalty, params[0].logprobs) == (0.0, 1.0, 0)
    result = backend.check_canary()
    assert result.ok and len(result.answers) == 2 and all(result.answers) and result.worst < 0.05
    assert len(fake.instances) == 1


def test_canary_restarts_an_engine_serving_wrong_weights_once(fake, tiny_model_dir):
    fake.faults = ["garbled"]
    backend = VLLMBackend(str(tiny_model_dir))
    assert len(fake.instances) == 2 and not fake.instances[0].alive
    result = backend.check_canary()
    assert result.ok and len(result.answers) == len(CANARY_PROMPTS)


def test_canary_still_wrong_after_a_restart_fails_naming_weights_and_token(fake, tiny_model_dir):
    fake.faults = ["garbled", "garbled"]
    with pytest.raises(CanaryMismatch, match=f"weights of {tiny_model_dir}, even after a restart: canary prompt "
                                             r"\d, token \d+"):
        VLLMBackend(str(tiny_model_dir))
    assert len(fake.instances) == 2 and not any(e.alive for e in fake.instances)  # nothing left holding the GPU


def test_load_version_takes_the_new_checkpoints_tokenizer_and_checks_it(fake, tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=3, vocab_size=320)
    backend = VLLMBackend(str(tiny_model_dir))
    assert len(backend.tokenizer) != 320
    fake.faults = ["stale"]  # the new engine still serves the old weights, until restarted
    result = backend.load_version(str(other))
    assert result.ok and result.restarted and len(fake.instances) == 3
    assert len(backend.tokenizer) == 320 and fake.instances[-1].model == str(other)
    assert backend.generate(PROMPTS[:1], SamplingConfig(n=1, max_new_tokens=4))[0][0].text
    assert fake.instances[-1].calls[-1][0][0]["prompt_token_ids"] == prompt_token_ids(backend.tokenizer, PROMPTS[0])


def test_a_lora_version_passes_the_canary_and_a_stale_one_is_restarted(fake, tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter", 8)
    fake.faults = [None, "stale"]  # the second engine serves the first one's weights without the adapter
    backend = VLLMBackend(str(tiny_model_dir))
    result = backend.load_version(str(tiny_model_dir), adapter_path=str(adapter), adapter_name="round-1")
    assert result.ok and result.restarted and len(fake.instances) == 3
    assert fake.instances[-1].args["max_lora_rank"] == 8


# ---- where versions load in the product ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_generation_job_on_a_version_vllm_serves_wrong_fails_naming_it(fake, tiny_model_dir, settings):
    from generation import services as gen
    from generation.models import Prompt, Response

    settings.PREFLOOP_BACKEND = "vllm"
    gen.release_backends()
    version = gen.register_version("round-7", tiny_model_dir)
    for i in range(2):
        Prompt.objects.create(text=f"question {i}?", split="train")
    fake.faults = ["garbled", "garbled"]
    job = gen.start_generation_job(version, n_prompts=2, config=SamplingConfig(n=2, max_new_tokens=6), enqueue=False)
    with pytest.raises(gen.GenerationError):
        gen.run_generation_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "version 'round-7'" in job.error and "canary prompt" in job.error
    assert not Response.objects.filter(job=job).exists()
    fake.faults = []
    job = gen.start_generation_job(version, n_prompts=2, config=SamplingConfig(n=2, max_new_tokens=6), enqueue=False)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded"
    stored = Response.objects.filter(job=job).order_by("sample_index").first()
    assert (stored.token_ids, stored.finish_reason) == ([5, 6, 2], "stop")
    gen.release_backends()


# ---- the real engine (GPU) ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(real_model_dir):
    backend = load_backend(str(real_model_dir), kind="vllm", gpu_memory_utilization=0.3)
    yield backend
    backend.close()


def _gpu(fn):
    for mark in needs_gpu:
        fn = mark(fn)
    return fn


@_gpu
def test_vllm_contract_and_seeds(engine, real_model_dir):
    assert engine.name == "vllm" and engine.max_model_len == 8192  # SmolLM2's own context
    config = SamplingConfig(n=3, max_new_tokens=48)
    out = engine.generate(PROMPTS, config, seeds=[1, 2, 3])
    assert [len(r) for r in out] == [3, 3, 3]
    for row in out:
        for s in row:
            assert s.finish_reason in ("stop", "length") and 1 <= len(s.token_ids) <= 48
            if s.finish_reason == "stop":
                assert s.token_ids[-1] in engine.eos_ids
            assert s.logp_sum < 0
    again = engine.generate(list(reversed(PROMPTS)), config, seeds=[3, 2, 1])
    assert [[s.token_ids for s in r] for r in out] == [[s.token_ids for s in r] for r in reversed(again)]
    greedy = engine.generate(PROMPTS[:1], SamplingConfig(n=2, temperature=0, max_new_tokens=16))[0]
    assert greedy[0].token_ids == greedy[1].token_ids
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=2.5)
    # vLLM's log-probs are close to transformers' (not equal: other kernels), which is why the trainer recomputes
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).cuda().eval()
    s = out[0][0]
    ids = prompt_token_ids(engine.tokenizer, PROMPTS[0])
    with torch.no_grad():
        logps = model(torch.tensor([ids + s.token_ids]).cuda()).logits[0].float().log_softmax(-1)
    ref = sum(float(logps[len(ids) - 1 + t, tok]) for t, tok in enumerate(s.token_ids))
    assert s.logp_sum == pytest.approx(ref, abs=0.05 * len(s.token_ids) + 0.5)


@_gpu
def test_vllm_canary_after_loading_a_perturbed_version(real_model_dir, tmp_path):
    """Load the base, then a perturbed copy saved as a new version: the engine must serve the new weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    perturbed = tmp_path / "round-1"
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in model.model.layers[-1].mlp.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(perturbed, safe_serialization=True)
    AutoTokenizer.from_pretrained(real_model_dir).save_pretrained(perturbed)
    backend = load_backend(str(real_model_dir), kind="vllm", gpu_memory_utilization=0.3)
    try:
        first = backend.check_canary()
        result = backend.load_version(str(perturbed))
        print(f"canary: base {first.texts!r} (worst {first.worst:.3f}); perturbed {result.texts!r} "
              f"(worst {result.worst:.3f}, restarted={result.restarted})")
        assert first.ok and result.ok and result.answers != first.answers
    finally:
        backend.close()


@_gpu
def test_vllm_lora_version_passes_the_canary(real_model_dir, tmp_path):
    adapter = _adapter(real_model_dir, tmp_path / "adapter", 12)
    backend = load_backend(str(real_model_dir), kind="vllm", adapter_path=str(adapter), adapter_name="round-1",
                           gpu_memory_utilization=0.3)
    try:
        assert backend.max_lora_rank == 16 and backend.check_canary().ok
    finally:
        backend.close()
