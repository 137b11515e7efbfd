"""The vLLM backend. On a CUDA GPU with vllm installed (requirements-gpu.txt): the sampling contract, seeds, LoRA
versions and the canary after a reload, on the real model. Everywhere: the same backend over a stand-in engine that
records what it is asked, so the mapping of settings, the samples and the canary's restart are checked on CPU too."""
from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from generation.backends.vllm import VLLMBackend, reference_canary
from prefloop.chat import prompt_token_ids

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.", "Write a haiku about tea."]
needs_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (requirements-gpu.txt)"),
]


# ---- a stand-in engine (CPU) ------------------------------------------------------------------------------------


class FakeLLM:
    """Answers every request with tokens 5, 6, (7 | EOS); the canary answer depends on `stale`."""

    instances: list[FakeLLM] = []
    answer_stale_first = False

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        self.stale = FakeLLM.answer_stale_first and not FakeLLM.instances
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        params = params if isinstance(params, list) else [params] * len(prompts)
        self.calls.append((prompts, params, lora_request))
        outs = []
        for p in params:
            if p.temperature == 0:  # the canary
                ids = [9, 9, 9] if self.stale else [5, 6, 7]
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids)]))
                continue
            completions = []
            for j in range(p.n):
                ids = [5, 6, 2] if j % 2 == 0 else [5, 6, 7]  # 2 is the tiny tokenizer's EOS
                completions.append(SimpleNamespace(
                    token_ids=ids, finish_reason="stop" if ids[-1] == 2 else "length", cumulative_logprob=None,
                    logprobs=[{t: SimpleNamespace(logprob=-0.5)} for t in ids],
                ))
            outs.append(SimpleNamespace(outputs=completions))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, id_, path: SimpleNamespace(lora_name=name, lora_int_id=id_, lora_path=path)
    for name, module in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances = []
    FakeLLM.answer_stale_first = False
    return FakeLLM


def test_settings_reach_the_engine_and_samples_come_back(fake_vllm, tiny_model_dir):
    backend = VLLMBackend(str(tiny_model_dir), tensor_parallel_size=2, gpu_memory_utilization=0.5)
    engine = fake_vllm.instances[0]
    assert engine.kwargs["tensor_parallel_size"] == 2 and engine.kwargs["gpu_memory_utilization"] == 0.5
    seen = []
    config = SamplingConfig(n=2, temperature=0.7, top_p=0.9, max_new_tokens=3)
    out = backend.generate(PROMPTS, config, seeds=[11, 12, 13], on_progress=lambda d, t: seen.append((d, t)))
    prompts, params, lora = engine.calls[-1]
    assert [p["prompt_token_ids"] for p in prompts] == [prompt_token_ids(backend.tokenizer, p) for p in PROMPTS]
    assert [(p.n, p.temperature, p.top_p, p.max_tokens, p.seed, p.logprobs) for p in params] == [
        (2, 0.7, 0.9, 3, s, 0) for s in (11, 12, 13)]
    assert lora is None and seen[-1] == (6, 6)
    first, second = out[0]
    assert (first.token_ids, first.finish_reason, first.logp_sum) == ([5, 6, 2], "stop", -1.5)
    assert second.finish_reason == "length"
    assert first.text == backend.tokenizer.decode([5, 6], skip_special_tokens=True)


def test_each_lora_version_gets_a_new_adapter_name(fake_vllm, tiny_model_dir, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    backend = VLLMBackend(str(tiny_model_dir), adapter_path=str(tmp_path), adapter_name="round-1")
    assert fake_vllm.instances[0].kwargs["enable_lora"] is True
    first = backend.lora_request
    backend.set_adapter(str(tmp_path), "round-1")
    assert backend.lora_request.lora_name != first.lora_name
    assert backend.lora_request.lora_int_id != first.lora_int_id
    backend.generate(PROMPTS[:1], SamplingConfig(n=1))
    assert fake_vllm.instances[-1].calls[-1][2] is backend.lora_request
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        backend.set_adapter(str(tmp_path / "missing"))


def test_canary_mismatch_restarts_the_engine(fake_vllm, tiny_model_dir):
    fake_vllm.answer_stale_first = True
    backend = VLLMBackend(str(tiny_model_dir))
    good = backend.tokenizer.decode([5, 6, 7], skip_special_tokens=True)
    result = backend.canary_check([good])
    assert result.ok and result.restarted and len(fake_vllm.instances) == 2
    assert backend.canary_check([good]).restarted is False  # a fresh engine answers right at once


# ---- the real engine (GPU) ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(real_model_dir):
    backend = load_backend(str(real_model_dir), kind="vllm", gpu_memory_utilization=0.3, max_model_len=2048)
    yield backend
    backend.close()


def _gpu(fn):
    for mark in needs_gpu:
        fn = mark(fn)
    return fn


@_gpu
def test_vllm_contract_and_seeds(engine, real_model_dir):
    assert engine.name == "vllm"
    config = SamplingConfig(n=3, max_new_tokens=48)
    out = engine.generate(PROMPTS, config, seeds=[1, 2, 3])
    assert [len(r) for r in out] == [3, 3, 3]
    eos = engine.tokenizer.eos_token_id
    for row in out:
        for s in row:
            assert s.finish_reason in ("stop", "length") and 1 <= len(s.token_ids) <= 48
            if s.finish_reason == "stop":
                assert s.token_ids[-1] == eos
            assert s.logp_sum < 0
    again = engine.generate(list(reversed(PROMPTS)), config, seeds=[3, 2, 1])
    assert [[s.token_ids for s in r] for r in out] == [[s.token_ids for s in r] for r in reversed(again)]
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
    base_ref, new_ref = reference_canary(str(real_model_dir)), reference_canary(str(perturbed))
    backend = load_backend(str(real_model_dir), kind="vllm", gpu_memory_utilization=0.3, max_model_len=2048)
    try:
        first = backend.canary_check(base_ref)
        assert first.ok and not first.restarted
        result = backend.load_version(str(perturbed), reference_texts=new_ref)
        print(f"canary: base {base_ref!r}; perturbed {new_ref!r}; engine {result.got!r}; ok={result.ok} "
              f"restarted={result.restarted}")
        assert result.ok
    finally:
        backend.close()
        shutil.rmtree(perturbed, ignore_errors=True)


@_gpu
def test_vllm_lora_version_passes_the_canary(real_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    backend = load_backend(str(real_model_dir), kind="vllm", adapter_path=str(tmp_path / "adapter"),
                           adapter_name="round-1", gpu_memory_utilization=0.3, max_model_len=2048)
    try:
        ref = reference_canary(str(real_model_dir), adapter_path=str(tmp_path / "adapter"))
        assert backend.canary_check(ref).ok
    finally:
        backend.close()
