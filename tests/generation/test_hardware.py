"""The CPU sampler's dtype follows the CPU's flags: fp32 where bf16 is emulated (AVX2 only), bf16 with AMX or
AVX-512 BF16, and the samples' log-probs still match a forward pass in the dtype chosen."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from prefcore import hardware

AVX2_ONLY = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize("cpuinfo, expected", [(AVX2_ONLY, torch.float32), (AMX, torch.bfloat16)])
def test_backend_dtype_follows_cpu_flags(tiny_model_dir, monkeypatch, cpuinfo, expected):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo)
    backend = load_backend(str(tiny_model_dir), kind="hf", device="cpu")
    assert backend.dtype == expected
    assert next(backend.model.parameters()).dtype == expected
    out = backend.generate(["hello"], SamplingConfig(n=2, max_new_tokens=6), seeds=[3])
    assert [len(s.token_ids) for s in out[0]] == [6, 6]


@pytest.mark.parametrize("cpuinfo", [AVX2_ONLY, AMX])
@pytest.mark.parametrize("choice", [None, "auto", "float32", "fp32", "bfloat16", "bf16", "float16", torch.bfloat16])
def test_the_dtype_named_without_torch_is_the_one_torch_resolves(monkeypatch, cpuinfo, choice):
    # the pages name the dtype without importing torch (prefcore.hardware.resolved_dtype_name): the same name as the
    # dtype the sampler and the trainer resolve, on either CPU kind
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo)
    assert hardware.resolved_dtype_name(choice, "cpu") == hardware.dtype_name(hardware.resolve_dtype(choice, "cpu"))
    with pytest.raises(ValueError, match="int3"):
        hardware.resolved_dtype_name("int3", "cpu")


def test_only_the_pages_note_skips_torch_and_a_model_runs_where_torch_finds_a_gpu(monkeypatch, tmp_path):
    # A GPU whose driver shows none of GPU_SIGNS (a board with other device files) is still where models run: the
    # sampler and the trainer ask torch; only the pages' note, in a process that has not loaded torch, does not.
    monkeypatch.setattr(hardware, "GPU_SIGNS", (str(tmp_path / "no-such-driver"),))
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: AVX2_ONLY)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _: "a GPU")
    assert hardware.default_device() == "cuda"
    assert hardware.resolved_dtype_name("auto") == "bfloat16" and "fastest on a GPU" in hardware.describe_dtype("auto")
    assert hardware.shown_device() == "cuda", "torch is loaded in this process: it is asked"
    monkeypatch.setattr(hardware, "sys", SimpleNamespace(modules={}))  # as in a web process, which has no torch
    assert hardware.shown_device() == "cpu"
    monkeypatch.setattr(hardware, "GPU_SIGNS", (str(tmp_path),))  # a driver's sign, present
    assert hardware.shown_device() == "cuda"


def test_dtype_can_be_forced(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), kind="hf", device="cpu", dtype="bfloat16")
    assert backend.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_backend(str(tiny_model_dir), kind="hf", dtype="int3")


def test_bf16_logps_match_a_bf16_forward_pass(tiny_model_dir):
    """In bf16 the sampler's log-probs are those of the bf16 model (same dtype), up to bf16 rounding: within the
    bound sum_t 4uZ_t of generation.backends.rounding (u = 2^-8, Z_t the position's largest |logit|)."""
    from generation.backends.rounding import token_logp_bounds
    from prefcore.chat import prompt_token_ids

    backend = load_backend(str(tiny_model_dir), kind="hf", device="cpu", dtype="bfloat16")
    prompt = "What is the capital of France?"
    sample = backend.generate([prompt], SamplingConfig(n=1, max_new_tokens=16), seeds=[5])[0][0]
    ids = prompt_token_ids(backend.tokenizer, prompt)
    with torch.no_grad():
        logits = backend.model(torch.tensor([ids + sample.token_ids])).logits[0].float()
    rows = logits[len(ids) - 1:len(ids) - 1 + len(sample.token_ids)]
    ref = float(rows.log_softmax(-1).gather(1, torch.tensor(sample.token_ids)[:, None]).sum())
    assert abs(sample.logp_sum - ref) <= float(token_logp_bounds(rows, torch.bfloat16).sum())


def test_thread_count_is_set_only_while_sampling(tiny_model_dir, dtype):
    before = torch.get_num_threads()
    backend = load_backend(str(tiny_model_dir), kind="hf", device="cpu", threads=1, dtype=dtype)
    seen = []
    backend.generate(["hi"], SamplingConfig(n=1, max_new_tokens=3),
                     on_progress=lambda done, total: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
