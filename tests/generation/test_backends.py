"""The sampling contract on the CPU (`hf`) backend: K samples per prompt in order, log-probs equal to a
teacher-forced forward pass, per-prompt seeds independent of the batch, stop/length, progress and cancel.

Tests that assert exact numbers (log-probs against teacher forcing, the two engines sampling the same tokens, a
prompt's samples whatever its batch) pin float32. Each has a bf16 twin on the tiny model (bf16 is emulated and about
100x slower on AVX2 machines) that asserts what holds in bf16, with the bound derived in
generation.backends.rounding (docs/numerics.md). The other tests run in the product's dtype (the `dtype` fixture).
"""
from __future__ import annotations

import shutil

import pytest
import torch

from generation.backends import GenerationCancelled, Sample, SamplingConfig, load_backend
from generation.backends.hf import HFBackend
from generation.backends.rounding import greedy_is_stable, token_logp_bounds
from prefcore.chat import prompt_token_ids

PROMPTS = [
    "What is the capital of France?",
    "hi",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a haiku about the sea."}],
    "Explain gradient descent in one sentence, please, with an example about a hill and a ball.",
    "def add(a, b):",
]


@pytest.fixture(scope="module")
def chatty_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its EOS embedding boosted, so samples end at many different lengths."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("chatty") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    eos = model.config.eos_token_id
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[eos] = emb[eos] + 0.25 * emb.mean(0) / emb.mean(0).norm() * emb.norm(dim=1).mean()
        model.model.norm.weight.mul_(3.0)
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def backend(chatty_model_dir):
    """fp32, pinned: for the tests that assert exact numbers."""
    return load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def product_backend(chatty_model_dir, dtype):
    """In the product's dtype: for the tests whose assertions hold in any dtype."""
    return load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype=dtype)


def teacher_forced(model, prompt_ids: list[int], response_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(each response token's log-prob [N], the logits behind them [N, V]) from one forward pass over prompt and
    response, in the model's dtype, on the model's device (tests/cuda); returned on the CPU."""
    ids = torch.tensor([prompt_ids + response_ids], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0].float().cpu()
    start = len(prompt_ids) - 1
    rows = logits[start:start + len(response_ids)]
    return rows.log_softmax(-1).gather(1, torch.tensor(response_ids)[:, None])[:, 0], rows


def teacher_forced_logp(model, prompt_ids: list[int], response_ids: list[int]) -> float:
    return float(teacher_forced(model, prompt_ids, response_ids)[0].double().sum())


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (a length difference counts), None when equal."""
    for t, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return t
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_greedy_parts_only_where_rounding_can(model, tokenizer, prompts, runs_a, runs_b) -> int:
    """Two bf16 greedy runs of the same prompts (two engines, or two batches): both pick the teacher-forced argmax
    at every step where rounding cannot flip it (`greedy_is_stable`), so they can part only at an unstable step.
    Returns how many prompts' paths are stable at every step: those the guarantee covers, and which must agree."""
    covered = 0
    for prompt, (a,), (b,) in zip(prompts, runs_a, runs_b, strict=True):
        ids = prompt_token_ids(tokenizer, prompt)
        _, logits = teacher_forced(model, ids, a.token_ids)
        stable = greedy_is_stable(logits, torch.bfloat16)
        parted = first_difference(a.token_ids, b.token_ids)
        shared = len(a.token_ids) if parted is None else parted
        for t in range(shared):
            if stable[t]:
                assert a.token_ids[t] == int(logits[t].argmax()), (prompt, t)
        if parted is not None:
            assert parted < len(a.token_ids) and not stable[parted], (prompt, parted, a.token_ids, b.token_ids)
        if bool(stable.all()):
            covered += 1
            assert a.token_ids == b.token_ids
    return covered


def test_contract_k_samples_per_prompt_in_order(backend):
    """(fp32: a prompt's samples alone and in the batch are compared exactly.)"""
    config = SamplingConfig(n=3, max_new_tokens=24, batch_size=4)
    out = backend.generate(PROMPTS, config, seeds=[11, 12, 13, 14, 15])
    assert isinstance(backend, HFBackend) and backend.name == "hf"
    assert [len(row) for row in out] == [3] * len(PROMPTS)
    eos = backend.tokenizer.eos_token_id
    reasons = set()
    for row in out:
        for s in row:
            assert isinstance(s, Sample) and 1 <= len(s.token_ids) <= 24
            reasons.add(s.finish_reason)
            if s.finish_reason == "stop":
                assert s.token_ids[-1] == eos and eos not in s.token_ids[:-1]
            else:
                assert len(s.token_ids) == 24 and eos not in s.token_ids
            assert s.text == backend.tokenizer.decode(s.token_ids, skip_special_tokens=True)
            assert s.logp_sum < 0
            assert len(s.extra["token_logps"]) == len(s.token_ids)
            assert sum(s.extra["token_logps"]) == pytest.approx(s.logp_sum, abs=1e-9)
    assert reasons == {"stop", "length"}, "the fixture model should produce both endings"
    # prompt order is kept although the sampler runs prompts sorted by length: each prompt's samples are the ones
    # it gets alone
    alone = backend.generate([PROMPTS[3]], config, seeds=[14])[0]
    assert [s.token_ids for s in alone] == [s.token_ids for s in out[3]]


@pytest.mark.parametrize("engine", ["slots", "generic"])
def test_logp_sum_equals_teacher_forced_forward(chatty_model_dir, engine):
    """fp32: the sampler's log-prob sums are those of a teacher-forced forward pass, to 1e-3."""
    backend = load_backend(str(chatty_model_dir), kind="hf", device="cpu", engine=engine, dtype="float32")
    config = SamplingConfig(n=2, max_new_tokens=40, temperature=1.0, top_p=0.9, batch_size=3)
    out = backend.generate(PROMPTS, config, seeds=[1, 2, 3, 4, 5])
    for prompt, row in zip(PROMPTS, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row:
            assert s.logp_sum == pytest.approx(teacher_forced_logp(backend.model, ids, s.token_ids), abs=1e-3)


@pytest.mark.parametrize("engine", ["slots", "generic"])
def test_bf16_logps_match_teacher_forcing_within_the_rounding_bound(chatty_model_dir, engine):
    """bf16 twin of the test above. bf16 keeps an 8-bit significand, unit roundoff u = 2^-8: each logit leaves the
    lm_head within u|z| of its value before rounding, so the sampler's and a teacher-forced pass's logits differ by at
    most 2uZ (Z = the position's largest |logit|) and a token's log-prob z_t - logsumexp(z) by at most b_t = 4uZ_t
    (generation.backends.rounding). Checked per token (the hf backend returns each token's log-prob) and on the sum,
    whose bound over N tokens is sum_t b_t <= 4uNZ (about sqrt(N) b typically). The bound is first order (roundings
    upstream of the logits are not counted); on this 2-layer model the errors stay far inside it.

    It resolves what matters: the same tokens one position off break it on every sample, and a wrong token breaks
    it unless its log-prob lies within 2 b_t of the right one's, which this asserts is rare (under 10% of wrong
    tokens at the positions sampled here).
    """
    backend = load_backend(str(chatty_model_dir), kind="hf", device="cpu", engine=engine, dtype="bfloat16")
    config = SamplingConfig(n=2, max_new_tokens=24, temperature=1.0, top_p=0.9, batch_size=3)
    out = backend.generate(PROMPTS, config, seeds=[1, 2, 3, 4, 5])
    caught = wrong = 0
    for prompt, row in zip(PROMPTS, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row:
            expected, logits = teacher_forced(backend.model, ids, s.token_ids)
            bound = token_logp_bounds(logits, torch.bfloat16)
            got = torch.tensor(s.extra["token_logps"])
            assert ((got - expected).abs() <= bound).all(), ((got - expected).abs() / bound).max()
            assert abs(s.logp_sum - float(expected.double().sum())) <= float(bound.sum())
            tokens = torch.tensor(s.token_ids)
            logps = logits.log_softmax(-1)
            if len(tokens) > 1:  # off by one: the same tokens scored one position later
                shifted = logps[1:].gather(1, tokens[:-1, None])[:, 0]
                assert ((got[:-1] - shifted).abs() > bound[:-1]).any()
            others = torch.ones_like(logps, dtype=torch.bool)
            others[torch.arange(len(tokens)), tokens] = False  # every other token of the vocabulary, per position
            caught += int((((got[:, None] - logps).abs() > bound[:, None]) & others).sum())
            wrong += int(others.sum())
    assert caught / wrong > 0.9


def test_engines_agree(chatty_model_dir):
    """fp32: the continuous-batching decoder and the plain forward loop sample the same tokens from the same seeds."""
    config = SamplingConfig(n=2, max_new_tokens=30, batch_size=4)
    slots = load_backend(str(chatty_model_dir), kind="hf", engine="slots", dtype="float32").generate(
        PROMPTS, config, seeds=[7] * 5)
    generic = load_backend(str(chatty_model_dir), kind="hf", engine="generic", dtype="float32").generate(
        PROMPTS, config, seeds=[7] * 5)
    assert [[s.token_ids for s in row] for row in slots] == [[s.token_ids for s in row] for row in generic]


MORE_PROMPTS = PROMPTS + ["Tell me about bread.", "Why is the sky blue?", "List three colours.", "Count to five.",
                          "What does a fox eat?", "Say thank you in French."]


def test_bf16_greedy_engines_agree_wherever_rounding_cannot_flip_the_argmax(chatty_model_dir):
    """bf16 twin of test_engines_agree. The engines compute the same logits with different kernels, so in bf16 they
    round differently: each logit within 2uZ of a teacher-forced pass's (see the log-prob twin). Sampled tokens may
    then part where a uniform falls near a CDF boundary that this rounding moves; each boundary moves by about 2b/T
    of probability (b = 4uZ), and on a flat distribution over hundreds of tokens the boundaries lie closer together
    than that, so no agreement rate can be promised for sampling at a temperature (docs/numerics.md measures it).
    What can be guaranteed: greedy picks the argmax, which rounding cannot flip where the top two logits are more
    than 4uZ apart; so both engines follow the teacher-forced argmax at every such step, part only at a step where
    the top two are closer, and agree on every prompt whose path has no such step (at least one here)."""
    config = SamplingConfig(n=1, temperature=0, max_new_tokens=16, batch_size=4)
    seeds = list(range(len(MORE_PROMPTS)))
    slots = load_backend(str(chatty_model_dir), kind="hf", engine="slots", dtype="bfloat16")
    generic = load_backend(str(chatty_model_dir), kind="hf", engine="generic", dtype="bfloat16")
    a = slots.generate(MORE_PROMPTS, config, seeds=seeds)
    b = generic.generate(MORE_PROMPTS, config, seeds=seeds)
    assert assert_greedy_parts_only_where_rounding_can(slots.model, slots.tokenizer, MORE_PROMPTS, a, b) >= 1


def test_same_prompt_and_seed_give_same_samples_whatever_the_batch(backend):
    """fp32: a prompt's samples are the same alone and in a crowd (its own seeded stream, its own rows)."""
    config = SamplingConfig(n=2, max_new_tokens=30, batch_size=2)
    target = PROMPTS[0]
    alone = backend.generate([target], config, seeds=[42])[0]
    crowd = backend.generate(list(reversed(PROMPTS)) + [target], SamplingConfig.from_dict(
        dict(config.to_dict(), batch_size=5)), seeds=[1, 2, 3, 4, 5, 42])[-1]
    assert [s.token_ids for s in alone] == [s.token_ids for s in crowd]
    assert [s.logp_sum for s in alone] == pytest.approx([s.logp_sum for s in crowd], abs=1e-4)
    # without explicit seeds a prompt's seed comes from its content, not its position
    a = backend.generate(PROMPTS[:2], config)
    b = backend.generate(PROMPTS[1::-1], config)
    assert [s.token_ids for s in a[0]] == [s.token_ids for s in b[1]]
    # the K samples of one prompt differ from each other, and another seed gives other samples
    other = backend.generate([target], config, seeds=[43])[0]
    assert alone[0].token_ids != alone[1].token_ids
    assert [s.token_ids for s in other] != [s.token_ids for s in alone]


def test_bf16_samples_are_reproducible_and_part_between_batches_only_where_rounding_can(chatty_model_dir):
    """bf16 twin of the test above. In bf16 a prompt's logits depend on the batch it shares (the kernels block and
    round differently for another shape), so its samples may change with its batch: the product keeps its promise to
    users by fixing each generation job's batches (generation.services.job_chunks; tested in
    tests/generation/test_job_numerics.py). What holds here: the same call gives the same samples and log-probs, bit
    for bit, also after the decoder grew for a larger job; greedy paths alone and in a crowd part only where rounding
    can flip the argmax (as between engines); and a sample drawn in any batch is a sample of the bf16 model (its
    log-probs within the bound of the twin above).
    """
    backend = load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="bfloat16")
    config = SamplingConfig(n=2, max_new_tokens=24, batch_size=5)
    crowd = list(reversed(PROMPTS))
    first = backend.generate(crowd, config, seeds=[1, 2, 3, 4, 5])
    # a worker keeps its decoder between jobs: one grown by a larger job (more slots, a longer cache) samples the same
    before = (backend._decoder.slots, backend._decoder.max_len)
    backend.generate(MORE_PROMPTS, SamplingConfig(n=4, max_new_tokens=100, batch_size=32))
    assert backend._decoder.slots > before[0] and backend._decoder.max_len > before[1]
    again = backend.generate(crowd, config, seeds=[1, 2, 3, 4, 5])
    assert [[(s.token_ids, s.logp_sum) for s in row] for row in first] == [[(s.token_ids, s.logp_sum) for s in row]
                                                                            for row in again]
    greedy = SamplingConfig(n=1, temperature=0, max_new_tokens=16, batch_size=8)
    seeds = list(range(len(MORE_PROMPTS)))
    together = backend.generate(MORE_PROMPTS, greedy, seeds=seeds)
    alone = [backend.generate([p], greedy, seeds=[k])[0] for k, p in enumerate(MORE_PROMPTS)]
    assert assert_greedy_parts_only_where_rounding_can(backend.model, backend.tokenizer, MORE_PROMPTS, alone,
                                                       together) >= 1
    ids = prompt_token_ids(backend.tokenizer, crowd[0])
    for s in first[0]:
        expected, logits = teacher_forced(backend.model, ids, s.token_ids)
        bound = token_logp_bounds(logits, torch.bfloat16)
        assert ((torch.tensor(s.extra["token_logps"]) - expected).abs() <= bound).all()


def test_greedy_is_the_argmax_path(backend):
    """fp32: the greedy path is transformers' own greedy generate."""
    config = SamplingConfig(n=2, temperature=0, max_new_tokens=12)
    first, second = backend.generate([PROMPTS[0]], config, seeds=[0])[0]
    assert first.token_ids == second.token_ids
    ids = prompt_token_ids(backend.tokenizer, PROMPTS[0])
    with torch.no_grad():
        ref = backend.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12,
                                     pad_token_id=backend.tokenizer.pad_token_id)[0, len(ids):].tolist()
    assert first.token_ids == ref[: len(first.token_ids)]


def test_progress_and_cancel(product_backend):
    backend = product_backend
    seen = []
    config = SamplingConfig(n=2, max_new_tokens=8, batch_size=3)
    backend.generate(PROMPTS, config, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))
    cancel_at_the_fourth_check(backend)


def cancel_at_the_fourth_check(backend) -> int:
    """Generate with a stop asked at the fourth check: GenerationCancelled; returns how many checks were made."""
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(GenerationCancelled):
        backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=64), should_stop=stop_after_three)
    return len(calls)


def test_bad_input_is_named(product_backend, tiny_model_dir):
    backend = product_backend
    with pytest.raises(ValueError, match="seeds"):
        backend.generate(PROMPTS, SamplingConfig(), seeds=[1])
    with pytest.raises(ValueError, match="the prompt 'word word .* context"):
        backend.generate(["hi", "word " * 600], SamplingConfig(max_new_tokens=8))
    with pytest.raises(ValueError, match="kind"):
        load_backend(str(tiny_model_dir), kind="onnx")
    with pytest.raises(ValueError, match="unknown option"):
        load_backend(str(tiny_model_dir), kind="hf", beam_width=3)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backend(str(tiny_model_dir / "nowhere"), kind="hf")
    assert backend.generate([], SamplingConfig()) == []


def test_auto_picks_hf_without_cuda_and_ignores_vllm_options(tiny_model_dir, monkeypatch, dtype):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    backend = load_backend(str(tiny_model_dir), tensor_parallel_size=1, gpu_memory_utilization=0.5,
                           adapter_name="v1", dtype=dtype)
    assert backend.name == "hf"


def test_lora_adapter_is_merged(tiny_model_dir, tmp_path):
    """A version stored as a LoRA adapter samples from base + adapter, and its log-probs follow the merged model
    (fp32: compared to 1e-3)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    config = SamplingConfig(n=1, max_new_tokens=16, temperature=0)
    tuned = load_backend(str(tiny_model_dir), kind="hf", adapter_path=str(tmp_path / "adapter"), dtype="float32")
    plain = load_backend(str(tiny_model_dir), kind="hf", dtype="float32")
    a = tuned.generate(PROMPTS[:2], config, seeds=[0, 0])
    b = plain.generate(PROMPTS[:2], config, seeds=[0, 0])
    assert [r[0].logp_sum for r in a] != pytest.approx([r[0].logp_sum for r in b], abs=1e-3)
    ids = prompt_token_ids(tuned.tokenizer, PROMPTS[0])
    assert a[0][0].logp_sum == pytest.approx(teacher_forced_logp(tuned.model, ids, a[0][0].token_ids), abs=1e-3)


@pytest.mark.parametrize(
    "bad, field",
    [({"n": 0}, "n"), ({"top_p": 0}, "top_p"), ({"temperature": -1}, "temperature"), ({"max_new_tokens": "x"},
     "max_new_tokens"), ({"batch_size": 1.5}, "batch_size"), ({"beams": 2}, "beams")],
)
def test_sampling_config_names_the_bad_field(bad, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig.from_dict(bad)


def test_sampling_config_round_trip():
    config = SamplingConfig(n=4, temperature=1, top_p=0.9, max_new_tokens=64, seed=3, batch_size=8)
    assert SamplingConfig.from_dict(config.to_dict()) == config
    assert SamplingConfig.from_dict({"n": "3", "temperature": "0.7"}) == SamplingConfig(n=3, temperature=0.7)


@pytest.mark.real_model
def test_real_model_logps_match_teacher_forcing(real_model_dir):
    backend = load_backend(str(real_model_dir), kind="hf", device="cpu", dtype="float32")
    prompts = ["What is the capital of France?", "Give me one tip for sleeping better."]
    out = backend.generate(prompts, SamplingConfig(n=2, max_new_tokens=48), seeds=[1, 2])
    for prompt, row in zip(prompts, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row:
            assert s.text.strip()
            assert s.logp_sum == pytest.approx(teacher_forced_logp(backend.model, ids, s.token_ids), abs=1e-3)


def test_nucleus_sampling_follows_the_renormalised_top_p_distribution(monkeypatch):
    from generation.backends import nucleus

    probs = torch.tensor([0.5, 0.25, 0.15, 0.06, 0.04])
    logits = probs.log()[None].repeat(2000, 1)
    uniforms = [(i + 0.5) / 2000 for i in range(2000)]
    tokens, logps = nucleus.sample_tokens(logits, 1.0, 0.85, uniforms)
    counts = torch.bincount(tokens, minlength=5).float() / 2000
    # nucleus {0, 1, 2} holds 0.9 >= 0.85; tokens 3 and 4 are never drawn
    assert counts.tolist() == pytest.approx([0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0], abs=2e-3)
    assert logps[0].item() == pytest.approx(probs.log()[tokens[0]].item(), abs=1e-6)
    # the staged candidates (tokens above a probability floor, a lower floor, a full sort) pick exactly what a
    # full sort picks: on peaked rows (the first floor holds the nucleus), flat rows of a 3000-token vocabulary
    # (the first floor holds everything) and of a 49k one (no floor does: sorted in full), mixed in one batch
    torch.manual_seed(0)
    peaked = torch.randn(64, 49152) * 2
    peaked[:, :40] += torch.randn(64, 40) * 3 + 9
    flat = torch.randn(64, 49152) * 0.1
    mixed = torch.cat([peaked[:16], flat[:16], peaked[16:], flat[16:]])
    u = [((i * 7919) % 1000) / 1000 for i in range(128)]
    wide = torch.randn(64, 3000) * 0.5
    staged = [nucleus.sample_tokens(x, 0.8, 0.95, u[: len(x)])[0] for x in (wide, peaked, flat, mixed)]
    monkeypatch.setattr(nucleus, "THRESHOLDS", ())
    for x, got in zip((wide, peaked, flat, mixed), staged, strict=True):
        assert torch.equal(got, nucleus.sample_tokens(x, 0.8, 0.95, u[: len(x)])[0])
    greedy = nucleus.sample_tokens(wide, 0, 0.95, u)[0]
    assert torch.equal(greedy, wide.argmax(-1))


def test_tokens_tied_at_the_nucleus_edge_do_not_depend_on_the_rows_beside_them(monkeypatch):
    """40 tokens tied exactly at the edge of a top-p nucleus: which of them fell inside depended on an unstable
    sort's order, which the width of the candidate matrix (set by the other rows of the batch) changed, so the same
    row and uniform drew different tokens beside different rows (148 of 800 draws). Found by an outside review.
    Ties are common in bf16 logits; the nucleus now takes tied tokens in token id order."""
    import math

    from generation.backends import nucleus

    z = torch.full((4096,), -30.0)
    ids = torch.randperm(4096, generator=torch.Generator().manual_seed(0))
    z[ids[0]] = math.log(0.5)
    z[ids[1:41]] = math.log(0.0125)  # 40 tokens of 0.0125 each: top-p 0.6 keeps the first and 8 of them
    uniforms = [i / 200 + 0.0025 for i in range(200)]
    alone = [int(nucleus.sample_tokens(z[None].clone(), 1.0, 0.6, [u])[0][0]) for u in uniforms]
    tied = sorted(int(t) for t in ids[1:41])
    assert sorted(set(alone) - {int(ids[0])}) == tied[:8]  # the lowest ids of the tied, each drawn
    for width in (1, 3, 17, 64):
        beside = torch.randn(width, 4096, generator=torch.Generator().manual_seed(width)) * 0.5
        for k, u in enumerate(uniforms):
            logits = torch.cat([beside[: width // 2], z[None], beside[width // 2:]])
            draws = [0.5] * logits.shape[0]
            draws[width // 2] = u
            assert int(nucleus.sample_tokens(logits, 1.0, 0.6, draws)[0][width // 2]) == alone[k], (width, u)
    monkeypatch.setattr(nucleus, "THRESHOLDS", ())  # the full sort takes the same tied tokens
    assert [int(nucleus.sample_tokens(z[None].clone(), 1.0, 0.6, [u])[0][0]) for u in uniforms] == alone


@pytest.fixture
def decoded_rows(monkeypatch) -> list[int]:
    """The rows of every decode step the slot decoder takes while the test runs."""
    from generation.backends import decoder

    rows: list[int] = []
    step = decoder.SlotDecoder.step

    def counting_step(self, tokens, positions):
        rows.append(tokens.shape[0])
        return step(self, tokens, positions)

    monkeypatch.setattr(decoder.SlotDecoder, "step", counting_step)
    return rows


def test_batch_size_bounds_the_rows_decoded_together(product_backend, decoded_rows):
    backend, rows = product_backend, decoded_rows
    backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=30, batch_size=6))
    assert max(rows) == 6
    rows.clear()
    out = backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=30, batch_size=2))  # reuses the larger cache
    assert max(rows) == 2
    # continuous batching: every step but the tail keeps both rows busy, so steps ~ total tokens / 2
    generated = sum(len(s.token_ids) - 1 for row in out for s in row)  # each first token comes from the prefill
    assert sum(rows) == generated and len(rows) <= generated / 2 + 30


def test_the_kv_cache_budget_caps_the_rows_and_changes_no_sample(chatty_model_dir, monkeypatch, decoded_rows):
    """fp32: a job whose batch_size would need more KV cache than KV_CACHE_BYTES decodes fewer rows at once, and
    samples exactly what it samples uncapped."""
    from generation.backends import hf
    from generation.backends.decoder import cache_bytes_per_slot

    config = SamplingConfig(n=2, max_new_tokens=30, batch_size=8)
    seeds = [1, 2, 3, 4, 5]
    free = load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="float32")
    uncapped = free.generate(PROMPTS, config, seeds=seeds)
    assert free._decoder.slots == 8

    capped = load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="float32")
    longest = max(len(prompt_token_ids(capped.tokenizer, p)) for p in PROMPTS) + config.max_new_tokens
    per_slot = cache_bytes_per_slot(capped.model, -(-longest // hf.CACHE_ROUND) * hf.CACHE_ROUND)
    monkeypatch.setattr(hf, "KV_CACHE_BYTES", 3 * per_slot + per_slot // 2)  # room for 3 slots
    decoded_rows.clear()  # the uncapped run's steps
    out = capped.generate(PROMPTS, config, seeds=seeds)
    assert capped._decoder.slots == 3 and max(decoded_rows) == 3
    cache = sum(t.numel() * t.element_size() for t in capped._decoder.cache)
    assert cache <= hf.KV_CACHE_BYTES
    assert [[s.token_ids for s in row] for row in out] == [[s.token_ids for s in row] for row in uncapped]


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_other_llama_family_models_match_teacher_forcing(tiny_model_dir, tmp_path, family, dtype_name):
    """Attention biases (Qwen2), per-head q/k norms (Qwen3) and Mistral run on the fast decoder, exactly: in fp32 to
    1e-3, with the two engines agreeing on most samples; in bf16 (the twin) every token's log-prob within the
    rounding bound b_t = 4uZ_t of the log-prob twin above."""
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config_cls = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
                  "mistral": transformers.MistralConfig}[family]
    model_cls = {"qwen2": transformers.Qwen2ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM,
                 "mistral": transformers.MistralForCausalLM}[family]
    config = config_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                        sliding_window=None)
    torch.manual_seed(1)
    model = model_cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)  # biases and norm weights that matter
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    backend = load_backend(str(tmp_path), kind="hf", device="cpu", dtype=dtype_name)
    assert backend.engine == "slots"
    config = SamplingConfig(n=2, max_new_tokens=20, temperature=1.0, batch_size=3)
    out = backend.generate(PROMPTS[:3], config, seeds=[1, 2, 3])
    generic = load_backend(str(tmp_path), kind="hf", engine="generic", dtype=dtype_name).generate(
        PROMPTS[:3], config, seeds=[1, 2, 3])
    # both engines sample exactly from the model (their tokens may part ways where float noise crosses a CDF step)
    for prompt, row, row2 in zip(PROMPTS[:3], out, generic, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row + row2:
            if dtype_name == "float32":
                assert s.logp_sum == pytest.approx(teacher_forced_logp(backend.model, ids, s.token_ids), abs=1e-3)
            else:
                expected, logits = teacher_forced(backend.model, ids, s.token_ids)
                bound = token_logp_bounds(logits, torch.bfloat16)
                assert ((torch.tensor(s.extra["token_logps"]) - expected).abs() <= bound).all()
    if dtype_name == "float32":
        assert sum(a.token_ids == b.token_ids
                   for r, r2 in zip(out, generic, strict=True) for a, b in zip(r, r2, strict=True)) >= 4


def test_a_prompt_too_long_for_the_context_is_named_by_its_text_not_its_place_in_the_batch(backend):
    """The error said "prompt 0" (its place in the chunk): a job that failed on one over-long prompt of hundreds told
    nobody which prompt to delete, and every later job that drew it failed the same way."""
    long = "Tell me about " + "the weather " * 400
    with pytest.raises(ValueError, match=r"the prompt 'Tell me about the weather the weather .*…' is \d+ tokens: "
                                         r"with max_new_tokens 8 that exceeds the model's context of \d+"):
        backend.generate(["Hello.", long], SamplingConfig(n=1, max_new_tokens=8))
    chat = [{"role": "user", "content": long}]
    with pytest.raises(ValueError, match=r"the prompt 'Tell me about the weather"):
        backend.generate([chat], SamplingConfig(n=1, max_new_tokens=8))


@pytest.mark.parametrize("engine", ["slots", "generic"])
@pytest.mark.parametrize("max_new_tokens", [1, 16])
def test_the_token_figure_ends_at_its_budget_on_both_engines(engine, max_new_tokens, chatty_model_dir):
    """The slots engine never counted a sample's first token (drawn from the prefill) nor reported the unused rest
    of the last samples' shares: its figure stopped at (m - 1) / m of the budget, and at max_new_tokens 1 it never
    moved at all."""
    backend = load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="float32", engine=engine)
    seen = []
    backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=max_new_tokens, batch_size=4),
                     seeds=list(range(len(PROMPTS))), on_tokens=lambda used, budget: seen.append((used, budget)))
    budget = len(PROMPTS) * 2 * max_new_tokens
    assert seen and seen[-1] == (budget, budget)
    assert [used for used, _ in seen] == sorted(used for used, _ in seen)  # it never goes back


def test_a_cancel_stops_the_slots_engine_when_every_sample_ends_at_its_first_token(chatty_model_dir):
    """Samples that end at their first token take no slot, so the decode loop, which asked for a stop per step, never
    ran: the whole job was sampled in the first refill and returned as if no stop had been asked."""
    backend = load_backend(str(chatty_model_dir), kind="hf", device="cpu", dtype="float32", engine="slots")
    done = []
    with pytest.raises(GenerationCancelled):
        backend.generate(PROMPTS * 4, SamplingConfig(n=4, max_new_tokens=1, batch_size=2),
                         should_stop=lambda: True, on_progress=lambda d, t: done.append(d))
    assert done == []
