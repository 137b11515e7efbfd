"""Seeds and models the sampler got wrong: a job seed that answered as seed 0, sliding-window models refused (or a job
failed) for their window, and dynamic RoPE rotated with frequencies the model does not use inside its context.

Tests that assert log-probs against teacher forcing pin float32 (exact to 1e-3); their bf16 twins assert every token
within the rounding bound b_t = 4uZ_t (docs/numerics.md).
"""
from __future__ import annotations

import json

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from generation.backends.base import MAX_SEED
from generation.backends.decoder import SlotDecoder, supports
from generation.backends.rounding import token_logp_bounds
from generation.services import prompt_seed
from tests.generation.test_backends import teacher_forced
from tests.tiny import build_tiny_model

DTYPES = ["float32", "bfloat16"]


def test_every_job_seed_gives_a_prompt_its_own_seed():
    """prompt_seed reduced the job seed modulo 2**31 - 1, which is MAX_SEED: job seed MAX_SEED sampled every prompt
    exactly as job seed 0 did."""
    seeds = [0, 1, 2, MAX_SEED - 1, MAX_SEED]
    for prompt_id in range(1, 200):
        assert len({prompt_seed(seed, prompt_id) for seed in seeds}) == len(seeds)


def test_job_seeds_below_max_seed_keep_their_per_prompt_seeds():
    """Stored answers are keyed by the per-prompt seed and a resumed job must draw what it drew before: the fix
    changes no seed a job could be given before except MAX_SEED."""
    assert [prompt_seed(0, 1), prompt_seed(5, 3), prompt_seed(42, 10**6)] == [7919, 5_023_772, 1_518_549_185]
    assert prompt_seed(MAX_SEED - 1, 7) == ((MAX_SEED - 1) * 1_000_003 + 7 * 7919) % MAX_SEED


def _mistral(tmp_path, tiny_model_dir, window: int):
    """A tiny Mistral whose sliding window is `window` tokens."""
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = transformers.MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, sliding_window=window)
    torch.manual_seed(1)
    transformers.MistralForCausalLM(config).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    return tmp_path


def _assert_teacher_forced(backend, prompt, row, dtype_name: str, model=None) -> None:
    """Every sample's log-probs equal a teacher-forced pass of `model` (the backend's own by default)."""
    model = model or backend.model
    ids = backend.prompt_ids(prompt)
    for s in row:
        expected, logits = teacher_forced(model, ids, s.token_ids)
        if dtype_name == "float32":
            assert s.logp_sum == pytest.approx(float(expected.double().sum()), abs=1e-3)
        else:
            bound = token_logp_bounds(logits, torch.bfloat16)
            assert ((torch.tensor(s.extra["token_logps"]) - expected).abs() <= bound).all()


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_a_sliding_window_model_samples_sequences_that_fill_its_window_on_the_slots_engine(
        tiny_model_dir, tmp_path, dtype_name):
    """The decoder compared the window with its cache's length, rounded up to 64: a window of 100 refused a prompt
    and answer of 100 tokens (the cache was 128), and the job failed on what the window holds."""
    backend = load_backend(str(_mistral(tmp_path, tiny_model_dir, window=100)), kind="hf", device="cpu",
                           dtype=dtype_name)
    assert backend.engine == "slots"
    prompt = "hi"
    new = 100 - len(backend.prompt_ids(prompt))  # prompt and answer fill the window exactly
    config = SamplingConfig(n=2, max_new_tokens=new, temperature=1.0, top_p=1.0)
    assert backend.unfit([prompt], new) == {}
    (row,) = backend.generate([prompt], config, seeds=[1])
    assert backend._decoder is not None and backend._decoder.max_len > 100  # the slots engine, its cache rounded up
    _assert_teacher_forced(backend, prompt, row, dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_a_sliding_window_model_samples_sequences_longer_than_its_window(tiny_model_dir, tmp_path, dtype_name):
    """A sequence longer than the window raised ValueError from generate and failed the whole job: such a call now
    samples on the generic engine, whose forward applies the window, and the slots engine takes the next one."""
    backend = load_backend(str(_mistral(tmp_path, tiny_model_dir, window=32)), kind="hf", device="cpu",
                           dtype=dtype_name)
    prompts = ["What is the capital of France?", "hi"]
    config = SamplingConfig(n=2, max_new_tokens=40, temperature=1.0, top_p=1.0)
    out = backend.generate(prompts, config, seeds=[1, 2])
    assert backend._decoder is None  # the generic engine sampled it
    assert max(len(backend.prompt_ids(p)) + len(s.token_ids) for p, row in zip(prompts, out, strict=True)
               for s in row) > 32
    for prompt, row in zip(prompts, out, strict=True):
        _assert_teacher_forced(backend, prompt, row, dtype_name)
    if dtype_name == "float32":  # the window matters here: full attention gives these tokens other log-probs
        ids = backend.prompt_ids(prompts[0])
        full = load_backend(str(tmp_path), kind="hf", device="cpu", dtype="float32").model
        full.config.sliding_window = None
        logps = [float(teacher_forced(full, ids, s.token_ids)[0].sum()) for s in out[0]]
        assert all(abs(lp - s.logp_sum) > 1e-2 for lp, s in zip(logps, out[0], strict=True))
    short = SamplingConfig(n=1, max_new_tokens=32 - len(backend.prompt_ids("hi")) + 1, temperature=1.0)
    backend.generate(["hi"], short, seeds=[3])  # a query sees 32 positions at most: the window holds them
    assert backend._decoder is not None


def test_the_slots_decoder_refuses_a_query_past_the_sliding_window(tiny_model_dir, tmp_path):
    """Its cache may be longer than the window (rounded up, or kept from a larger job); the positions it is asked to
    attend over may not."""
    backend = load_backend(str(_mistral(tmp_path, tiny_model_dir, window=16)), kind="hf", device="cpu",
                           dtype="float32")
    dec = SlotDecoder(backend.model, slots=1, max_len=64)
    dec.prefill([list(range(3, 19))])  # 16 tokens: the window
    with pytest.raises(ValueError, match=r"sliding-window attention \(16\)"):
        dec.prefill([list(range(3, 20))])
    dec.step(torch.tensor([5]), torch.tensor([15]))
    with pytest.raises(ValueError, match=r"a query over 17 positions passes the sliding-window attention \(16\)"):
        dec.step(torch.tensor([5]), torch.tensor([16]))


def _llama_config(rope: dict | None):
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=100)
    if rope is not None:
        config.rope_parameters = {"rope_theta": 10000.0, **rope}
    return config


@pytest.mark.parametrize(("rope", "slots"), [
    (None, True),
    ({"rope_type": "linear", "factor": 2.0}, True),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 50}, True),
    ({"rope_type": "dynamic", "factor": 4.0}, False),
    ({"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
      "original_max_position_embeddings": 50}, False),
])
def test_the_slots_engine_takes_only_ropes_fixed_by_position(rope, slots):
    """Dynamic NTK and LongRoPE choose every position's frequencies from the sequence's length; one table cannot."""
    from transformers import LlamaForCausalLM

    assert supports(LlamaForCausalLM(_llama_config(rope))) is slots


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_a_dynamic_rope_model_samples_as_its_forward_pass_up_to_its_context(tmp_path, dtype_name):
    """The decoder built its table over the cache's length rounded up (128) past the context (100): dynamic NTK
    rescaled the frequencies of every position, the samples' log-probs were wrong, and the model's own rotary module
    was left rescaled. Such a model samples on the generic engine, and a fresh copy scores it alike."""
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path / "m", context=100)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():  # sharper attention, so that a position's rotation shows in the log-probs
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    model.save_pretrained(path, safe_serialization=True)
    config = json.loads((path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}
    (path / "config.json").write_text(json.dumps(config))
    backend = load_backend(str(path), kind="hf", device="cpu", dtype=dtype_name)
    fresh = AutoModelForCausalLM.from_pretrained(path, dtype=backend.dtype).eval()  # never sampled with
    prompt = "What is the capital of France?"
    new = 100 - len(backend.prompt_ids(prompt))  # prompt and answer fill the context exactly
    assert backend.unfit([prompt], new) == {}
    (row,) = backend.generate([prompt], SamplingConfig(n=2, max_new_tokens=new, temperature=1.0, top_p=1.0),
                              seeds=[5])
    _assert_teacher_forced(backend, prompt, row, dtype_name, model=fresh)
    assert torch.equal(backend.model.model.rotary_emb.inv_freq, fresh.model.rotary_emb.inv_freq)
    assert backend.engine == "generic"
