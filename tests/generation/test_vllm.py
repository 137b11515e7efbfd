"""The vLLM backend on a CUDA GPU: the sampling contract, seeds, LoRA versions and the canary after a reload.
Skipped without CUDA or without the vllm package (requirements-gpu.txt)."""
from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (requirements-gpu.txt)"),
]

from generation.backends import SamplingConfig, load_backend  # noqa: E402
from generation.backends.vllm import reference_canary  # noqa: E402
from prefloop.chat import prompt_token_ids  # noqa: E402

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.", "Write a haiku about tea."]


@pytest.fixture(scope="module")
def engine(real_model_dir):
    backend = load_backend(str(real_model_dir), kind="vllm", gpu_memory_utilization=0.3, max_model_len=2048)
    yield backend
    backend.close()


def test_auto_picks_vllm_on_a_gpu(engine):
    assert engine.name == "vllm"


def test_contract_and_seeds(engine, real_model_dir):
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
    # vLLM's log-probs are close to transformers' (not equal: bf16 kernels), which is why the trainer recomputes
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).cuda().eval()
    s = out[0][0]
    ids = prompt_token_ids(engine.tokenizer, PROMPTS[0])
    with torch.no_grad():
        logps = model(torch.tensor([ids + s.token_ids]).cuda()).logits[0].float().log_softmax(-1)
    ref = sum(float(logps[len(ids) - 1 + t, tok]) for t, tok in enumerate(s.token_ids))
    assert s.logp_sum == pytest.approx(ref, abs=0.05 * len(s.token_ids) + 0.5)


def test_canary_after_loading_a_perturbed_version(real_model_dir, tmp_path):
    """Load the base, then a perturbed copy saved as a new version: the engine must serve the new weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    perturbed = tmp_path / "round-1"
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in model.model.layers[-1].mlp.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(perturbed, safe_serialization=True)
    AutoTokenizer.from_pretrained(real_model_dir).save_pretrained(perturbed)
    base_ref = reference_canary(str(real_model_dir))
    new_ref = reference_canary(str(perturbed))
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


def test_lora_versions_get_new_adapter_names(real_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    backend = load_backend(str(real_model_dir), kind="vllm", adapter_path=str(tmp_path / "adapter"),
                           adapter_name="round-1", gpu_memory_utilization=0.3, max_model_len=2048)
    try:
        first = backend.lora_request
        backend.set_adapter(str(tmp_path / "adapter"), "round-1")
        assert backend.lora_request.lora_name != first.lora_name
        assert backend.lora_request.lora_int_id != first.lora_int_id
        ref = reference_canary(str(real_model_dir), adapter_path=str(tmp_path / "adapter"))
        assert backend.canary_check(ref).ok
    finally:
        backend.close()
