"""Sequence log-probs from the shared-prompt layout against a plain full-logits computation, and token masking.

The exact comparisons run in fp32 (the model fixture, no autocast); their bf16 twins run the trainer's bf16 policy
(fp32 weights under bf16 autocast) on the tiny model, with the rounding bound of generation.backends.rounding:
each sequence's log-prob within sum_t 4uZ_t (u = 2^-8, Z_t the largest |logit| where token t is predicted)."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation.backends.rounding import token_logp_bounds
from training.dpo.data import PreferencePair, tokenize_pair
from training.dpo.logps import PairLogps, build_pair_batch, plain_sequence_logps, token_logps

ROWS = [([5, 6, 7], [8, 9], [10, 11, 12, 13]), ([1, 2], [3, 4, 5, 6, 7, 8], [9]), ([4] * 6, [7], [8])]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_layout_equals_separate_full_logits(model):
    out = PairLogps(model, chunk=3)(build_pair_batch(ROWS, pad_token_id=0))
    chosen = [plain_sequence_logps(model, p, c) for p, c, _ in ROWS]
    rejected = [plain_sequence_logps(model, p, r) for p, _, r in ROWS]
    assert out.tolist() == pytest.approx(chosen + rejected, abs=1e-4)


def test_padding_and_batch_neighbours_do_not_change_logps(model):
    scorer = PairLogps(model)
    alone = [scorer(build_pair_batch([row], 0)).tolist() for row in ROWS]
    together = scorer(build_pair_batch(ROWS, 0)).detach()
    n = len(ROWS)
    for i, (c, r) in enumerate(alone):
        assert float(together[i]) == pytest.approx(c, abs=1e-4)
        assert float(together[n + i]) == pytest.approx(r, abs=1e-4)


def bf16_plain(model, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """(the plain full-logits log-prob of the response under bf16 autocast, its rounding bound sum_t 4uZ_t)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    logp = float(logits.log_softmax(-1).gather(1, torch.tensor(response)[:, None]).double().sum())
    return logp, float(token_logp_bounds(logits, torch.bfloat16).sum())


def test_bf16_layout_equals_separate_full_logits_within_the_rounding_bound(model):
    """bf16 twin of the two tests above: the layout, with its batch neighbours or alone, gives each sequence's plain
    log-prob within the bound (which a one-token shift exceeds: the check resolves what matters)."""
    scorer = PairLogps(model, chunk=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        together = scorer(build_pair_batch(ROWS, 0)).float().tolist()
        alone = [scorer(build_pair_batch([row], 0)).float().tolist() for row in ROWS]
    n = len(ROWS)
    for i, (p, c, r) in enumerate(ROWS):
        for k, response in ((i, c), (n + i, r)):
            plain, bound = bf16_plain(model, p, response)
            assert abs(together[k] - plain) <= bound
            assert abs(alone[i][0 if k < n else 1] - plain) <= bound
    p, c, _ = ROWS[1]
    plain, bound = bf16_plain(model, p, c)
    shifted, _ = bf16_plain(model, p + c[:1], c[1:] + [c[0]])
    assert abs(shifted - plain) > bound


def test_prompt_tokens_are_never_counted(model):
    batch = build_pair_batch(ROWS, 0)
    assert batch.token_counts.tolist() == [2, 6, 1, 4, 1, 1]
    assert batch.target_ids.tolist() == [8, 9, 10, 11, 12, 13, 3, 4, 5, 6, 7, 8, 9, 7, 8]
    # changing a prompt token changes the log-probs (it is context) but never the count of scored tokens
    other = build_pair_batch([([5, 6, 99], [8, 9], [10, 11, 12, 13])], 0)
    assert other.token_counts.tolist() == [2, 4]


def test_gradients_equal_plain_computation(model):
    model.zero_grad()
    PairLogps(model, chunk=4)(build_pair_batch(ROWS, 0)).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0
    for p, c, r in ROWS:
        for resp in (c, r):
            ids = torch.tensor([p + resp])
            logits = model(input_ids=ids).logits.float()
            total = total + torch.log_softmax(logits[0, :-1], -1).gather(1, ids[0, 1:, None])[len(p) - 1 :].sum()
    total.backward()
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-4), name
    model.zero_grad()


def test_chunked_token_logps_match_log_softmax():
    torch.manual_seed(0)
    hidden = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(8, 50, bias=False).double()
    targets = torch.randint(0, 50, (10,))
    ours = token_logps(hidden, head, targets, chunk=3)
    plain = torch.log_softmax(head(hidden), -1).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(ours.double(), plain, atol=1e-6)
    w = torch.randn(10, dtype=torch.float64)
    g1 = torch.autograd.grad((ours.double() * w).sum(), [hidden, head.weight])
    g2 = torch.autograd.grad((plain * w).sum(), [hidden, head.weight])
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_logits_give_the_recomputed_gradients_and_survive_a_second_backward(monkeypatch, dtype):
    """The head keeps a training forward's logits for backward (no second product) up to KEPT_LOGITS_BYTES and
    recomputes them over it: the same gradients either way, and a second backward through a kept graph (fp32 kept
    logits, which .float() hands back as they are, were worked on in place by the first) gives the first's."""
    from training.dpo import logps

    torch.manual_seed(0)
    hidden = torch.randn(10, 16, requires_grad=True)
    head = torch.nn.Linear(16, 70, bias=False)
    targets = torch.randint(0, 70, (10,))
    weights = torch.randn(10)

    def grads(budget, twice=False):
        monkeypatch.setattr(logps, "KEPT_LOGITS_BYTES", budget)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = (token_logps(hidden, head, targets, chunk=3) * weights).sum()
        first = torch.autograd.grad(out, [hidden, head.weight], retain_graph=twice)
        return (first, torch.autograd.grad(out, [hidden, head.weight])) if twice else first

    recomputed = grads(0)
    kept, again = grads(2**30, twice=True)
    for a, b, c in zip(recomputed, kept, again, strict=True):
        assert torch.equal(a, b) and torch.equal(b, c)

def test_chat_template_tokens(tokenizer):
    pair = PreferencePair(prompt="Hi there", chosen="Hello!", rejected=f"Go away{tokenizer.eos_token}")
    t = tokenize_pair(tokenizer, pair, max_length=512, max_prompt_length=256)
    eos = tokenizer.eos_token_id
    # the prompt is the chat template with the generation prompt; responses end with exactly one EOS
    assert tokenizer.decode(t.prompt_ids) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert t.chosen_ids[-1] == eos and eos not in t.chosen_ids[:-1]
    assert t.rejected_ids[-1] == eos and eos not in t.rejected_ids[:-1]  # never doubled
    assert tokenizer.decode(t.chosen_ids[:-1]) == "Hello!"
    assert not t.truncated


def test_truncation_keeps_end_of_prompt(tokenizer):
    long_prompt = "word " * 200
    pair = PreferencePair(prompt=long_prompt + "LAST", chosen="yes " * 100, rejected="no")
    t = tokenize_pair(tokenizer, pair, max_length=64, max_prompt_length=32)
    assert t.truncated
    assert len(t.prompt_ids) == 32 and tokenizer.decode(t.prompt_ids).endswith("LAST<|im_end|>\n<|im_start|>assistant\n")
    assert len(t.prompt_ids) + len(t.chosen_ids) == 64
    assert t.rejected_ids[-1] == tokenizer.eos_token_id


@pytest.mark.real_model
def test_real_model_layout_equals_plain(real_model_dir):
    """SmolLM2-135M-Instruct on two HH pairs: the shared-prompt layout gives the plain log-probs."""
    from pathlib import Path

    from training.dpo.data import load_pairs_jsonl

    hh = Path(__file__).resolve().parents[2] / "data" / "hh-rlhf-sample.jsonl"
    tok = AutoTokenizer.from_pretrained(real_model_dir)
    real = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    rows = [tokenize_pair(tok, p, 256, 128).row() for p in load_pairs_jsonl(hh)[:2]]
    with torch.no_grad():
        out = PairLogps(real)(build_pair_batch(rows, tok.pad_token_id))
    plain = [plain_sequence_logps(real, p, c) for p, c, _ in rows] + [plain_sequence_logps(real, p, r) for p, _, r in rows]
    assert out.tolist() == pytest.approx(plain, abs=2e-3, rel=1e-5)


def test_compute_logps_sums_each_responses_token_logps_in_input_order(tiny_model_dir, model, tokenizer):
    """compute_logps in fp32, through length-grouped batches of 1 and 2: each pair's (chosen, rejected) sum equals
    the plain full-logits computation token by token, each response given the prompt alone, in input order."""
    from training.dpo.config import DPOConfig
    from training.dpo.trainer import compute_logps

    pairs = [PreferencePair(prompt="Name a fruit.", chosen="An apple, or a pear.", rejected="No."),
             PreferencePair(prompt="Say hi.", chosen="Hi there!", rejected="Hello, how are you today?"),
             PreferencePair(prompt="Count to three, please.", chosen="1 2 3", rejected="One, two, three, four.")]

    def plain(prompt_ids, response_ids):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0, :-1].double(),
                                     dim=-1)
        return sum(float(logp[len(prompt_ids) - 1 + t, tok]) for t, tok in enumerate(response_ids))

    expected = []
    for pair in pairs:
        prompt_ids, chosen_ids, rejected_ids = tokenize_pair(tokenizer, pair, 128, 64).row()
        expected.append((plain(prompt_ids, chosen_ids), plain(prompt_ids, rejected_ids)))
    for batch_size in (1, 2):
        config = DPOConfig(batch_size=batch_size, dtype="float32", max_length=128, max_prompt_length=64)
        got = compute_logps(tiny_model_dir, pairs, config)
        assert [c for c, _ in got] == pytest.approx([c for c, _ in expected], abs=1e-4)
        assert [r for _, r in got] == pytest.approx([r for _, r in expected], abs=1e-4)


def test_head_under_autocast_is_autocasts_linear_in_value_and_gradient():
    """Under bf16 autocast the chunked head equals log_softmax of autocast's own nn.Linear (a bf16 product, fp32
    log-softmax), in value and in the gradients of hidden states and weight, across chunks; an fp32 product (the
    head before December 2026) is measurably further from it."""
    torch.manual_seed(0)
    hidden = (torch.randn(10, 64) * 3).requires_grad_()
    head = torch.nn.Linear(64, 300, bias=False)
    targets = torch.randint(0, 300, (10,))
    weights = torch.randn(10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = token_logps(hidden, head, targets, chunk=3)
        plain = torch.log_softmax(head(hidden).float(), -1).gather(1, targets[:, None])[:, 0]
    fp32 = torch.log_softmax(head(hidden).float(), -1).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(ours, plain, atol=1e-5)
    assert (ours - fp32).abs().max() > 1e-3
    g_ours = torch.autograd.grad((ours * weights).sum(), [hidden, head.weight])
    g_plain = torch.autograd.grad((plain * weights).sum(), [hidden, head.weight])
    for a, b in zip(g_ours, g_plain, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert torch.allclose(a, b, rtol=2e-2, atol=2e-3), (a - b).abs().max()


def test_a_batch_counts_its_real_tokens_not_its_padding():
    """Rows of 4 and 10 real tokens padded to 10: 14 tokens (the mask's diagonal counted 20, padding included, and
    inflated the trainer's tokens_per_s)."""
    rows = [([1], [2, 3], [4]), ([1, 2, 3, 4], [5, 6, 7], [8, 9, 10])]
    assert build_pair_batch(rows).tokens == 14


def test_eager_attention_reads_the_pair_layout_as_sdpa_does(tiny_model_dir):
    """Eager attention adds a 4D mask to the scores: the layout's bool mask was added as 1 and 0, the rejected answer
    saw the chosen one, and a model of an architecture without SDPA (or whose config asks for eager) trained on
    wrong log-probs without a word (-23.98 for -23.84 on the first sequence here)."""
    rows = [([5, 6, 7], [8, 9, 10, 11], [12, 13]), ([5, 6], [20], [21, 22, 23, 24, 25, 26])]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        got = PairLogps(model)(build_pair_batch(rows, 0))
    want = [plain_sequence_logps(model, p, c) for p, c, _ in rows] + [plain_sequence_logps(model, p, r) for p, _, r in rows]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_an_attention_that_reads_no_4d_mask_is_refused_by_name(model):
    model.config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="'flash_attention_2'.*attn_implementation='sdpa'"):
            PairLogps(model)(build_pair_batch([([5, 6], [7], [8])], 0))
    finally:
        model.config._attn_implementation = "sdpa"


@pytest.mark.parametrize("budget, engine", [(0, "sdpa"), (2**62, "prefloop_pairs")])
def test_the_layout_is_exact_under_either_attention_the_cpu_picks(model, monkeypatch, budget, engine):
    """On the CPU a batch runs the trainer's own eager attention when what it keeps for backward fits the budget
    (faster there: bench/attention.py), SDPA over it: both read the layout's mask, and the model's own setting is left
    as it was."""
    from training.dpo import logps

    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", budget)
    batch = build_pair_batch(ROWS, pad_token_id=0)
    assert logps.attention_for(model, batch) == engine
    out = PairLogps(model, chunk=3)(batch)
    want = [plain_sequence_logps(model, p, c) for p, c, _ in ROWS] + [plain_sequence_logps(model, p, r) for p, _, r in ROWS]
    assert out.tolist() == pytest.approx(want, abs=1e-4)
    assert model.config._attn_implementation == "sdpa"


def test_the_budget_counts_what_eager_attention_keeps_over_all_layers(model, monkeypatch):
    from training.dpo import logps

    batch = build_pair_batch(ROWS, pad_token_id=0)
    rows, length = batch.input_ids.shape
    config = model.config
    kept = rows * config.num_attention_heads * length * length * 6 * config.num_hidden_layers
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", kept)
    assert logps.attention_for(model, batch) == logps.PAIR_ATTENTION
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", kept - 1)
    assert logps.attention_for(model, batch) == "sdpa"
    # an exception inside the forward leaves the model's setting as it was
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", kept)
    bad = build_pair_batch(ROWS, pad_token_id=0)
    bad.input_ids[0, 0] = 10**6  # past the vocabulary
    with pytest.raises(IndexError):
        PairLogps(model)(bad)
    assert model.config._attn_implementation == "sdpa"


def test_one_scorer_shared_by_two_threads_reads_each_batch_with_its_own_attention(model, monkeypatch):
    """A forward that chose SDPA (passing SDPA's bool mask) ran its layers as eager while another thread had switched
    the model's shared setting, and eager added the mask as 1 and 0: 7 of 150 wrong (an outside review). The same
    holds with the trainer's own eager attention in its place."""
    import threading

    from training.dpo import logps

    scorer = PairLogps(model)
    small = build_pair_batch(ROWS, 0)
    big = build_pair_batch([([5 + i % 50] * 40, [8 + i % 7] * 30, [10 + i % 5] * 30) for i in range(8)], 0)
    config = model.config
    rows, length = small.input_ids.shape
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES",
                        rows * config.num_attention_heads * length * length * 6 * config.num_hidden_layers)
    assert logps.attention_for(model, small) == logps.PAIR_ATTENTION and logps.attention_for(model, big) == "sdpa"
    with torch.no_grad():
        want = {"small": scorer(small), "big": scorer(big)}
    wrong = {"small": 0, "big": 0}

    def run(name, batch):
        for _ in range(150):
            with torch.no_grad():
                wrong[name] += not torch.allclose(scorer(batch), want[name], atol=1e-4)

    threads = [threading.Thread(target=run, args=("small", small)), threading.Thread(target=run, args=("big", big))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == {"small": 0, "big": 0} and model.config._attn_implementation == "sdpa"


def _transformers_eager(model, batch, dtype):
    """The batch's log-probs and the gradient of their weighted sum under transformers' own eager attention."""
    from training.dpo import logps

    model.config._attn_implementation = "eager"
    try:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = PairLogps(model)(batch)
    finally:
        model.config._attn_implementation = "sdpa"
    assert logps.attention_for(model, batch) == logps.PAIR_ATTENTION
    return out


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_the_trainers_eager_attention_is_transformers_eager_in_value_and_gradient(model, dtype, tolerance):
    """pair_attention (the CPU's attention for the pair layout) against transformers' eager attention on the same
    batch: the same log-probs and gradients, in fp32 to rounding and in bf16 to bf16's (its softmax is taken in bf16
    where eager's is fp32 then rounded, and its mask is a bf16 one); padding rows and a grouped-query model
    included."""
    from training.dpo import logps

    assert model.config.num_key_value_heads < model.config.num_attention_heads  # query heads share key heads
    batch = build_pair_batch(ROWS + [([5, 6, 7, 8, 9, 10], [11, 12, 13], [14])], pad_token_id=0)
    weights = torch.linspace(-1, 1, 2 * batch.pairs)
    params = [p for p in model.parameters() if p.requires_grad]
    want = _transformers_eager(model, batch, dtype)
    want_grads = torch.autograd.grad((want * weights).sum(), params)
    assert logps.attention_for(model, batch) == logps.PAIR_ATTENTION
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        got = PairLogps(model)(batch)
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    assert got.tolist() == pytest.approx(want.tolist(), abs=tolerance)
    scale = max(float(g.abs().max()) for g in want_grads)
    assert max(float((a - b).abs().max()) for a, b in zip(got_grads, want_grads, strict=True)) <= tolerance * scale
    assert model.config._attn_implementation == "sdpa"


def test_an_architecture_outside_the_plain_ones_keeps_transformers_eager(model, monkeypatch):
    """A model type whose attention does more than softmax(q k^T) v (Gemma's soft-capping) is never handed to
    pair_attention, which would drop it: it runs transformers' eager attention under the budget."""
    from training.dpo import logps

    batch = build_pair_batch(ROWS, pad_token_id=0)
    monkeypatch.setattr(model.config, "model_type", "gemma2")
    assert logps.attention_for(model, batch) == "eager"
    with pytest.raises(ValueError, match="soft-capping"):
        logps.pair_attention(None, *(torch.zeros(1, 2, 3, 4),) * 3, torch.zeros(1, 1, 3, 3), 1.0, softcap=30.0)


def _tiny(kind: str, **extra):
    """A tiny random model of a transformers architecture, its weights large enough that attention matters."""
    import transformers

    settings = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, attn_implementation="sdpa") | extra
    model = getattr(transformers, f"{kind}ForCausalLM")(getattr(transformers, f"{kind}Config")(**settings)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.add_(torch.randn_like(p) * 0.2)
    return model


LONG_ROWS = ROWS + [([3] * 20, list(range(10, 40)), [50])]


@pytest.mark.parametrize("kind, extra", [
    ("Mistral", {"sliding_window": 8}),
    ("Qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}),
    ("Qwen3", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}),
])
def test_a_sliding_window_is_applied_in_the_packed_layout_and_refused_past_it_in_the_padded_one(kind, extra,
                                                                                                 monkeypatch):
    """transformers passes a sliding window to the attention of Mistral's and Qwen's layers, and adds none to a 4D
    mask given as it is: the trainer's attention dropped it (27 nats off on a 51-token row with a window of 8, an
    outside review), and the padded path never had it. The packed layout applies it per layer, counting distances in
    the pair's own positions; a padded batch that reaches past the window is refused, naming it."""
    from training.dpo import logps

    model = _tiny(kind, **extra)
    assert logps.sliding_window(model.config) == 8
    batch = build_pair_batch(LONG_ROWS, pad_token_id=0)
    want = [plain_sequence_logps(model, p, c) for p, c, _ in LONG_ROWS] + [
        plain_sequence_logps(model, p, r) for p, _, r in LONG_ROWS]
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", 2**62)
    assert logps.attention_for(model, batch) == logps.PAIR_ATTENTION
    with torch.no_grad():
        assert PairLogps(model)(batch).tolist() == pytest.approx(want, abs=1e-4)
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", 0)
    with pytest.raises(ValueError, match="position 49, past the model's sliding window of 8"):
        PairLogps(model)(batch)
    short = build_pair_batch(ROWS, pad_token_id=0)  # every position within the window: the padded path reads it
    with torch.no_grad():
        assert PairLogps(model)(short).tolist() == pytest.approx(
            [plain_sequence_logps(model, p, c) for p, c, _ in ROWS]
            + [plain_sequence_logps(model, p, r) for p, _, r in ROWS], abs=1e-4)


def test_an_fp64_model_under_autocast_stays_in_fp64(monkeypatch):
    """Autocast leaves fp64 alone: the trainer's attention computed an fp64 model's attention in bf16 under it, and
    its fp64 output projection refused the result."""
    from training.dpo import logps

    model = _tiny("Llama").double()
    batch = build_pair_batch(LONG_ROWS, pad_token_id=0)
    monkeypatch.setattr(logps, "EAGER_ATTENTION_BYTES", 2**62)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = PairLogps(model)(batch)
    want = [plain_sequence_logps(model, p, c) for p, c, _ in LONG_ROWS] + [
        plain_sequence_logps(model, p, r) for p, _, r in LONG_ROWS]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("mask", [None, torch.zeros(1, 1, 3, 3)], ids=["no mask", "a 4D mask"])
def test_an_attention_call_without_the_packed_segments_is_refused(mask):
    """A model that does not pass its keyword arguments on to its attention would run the packed row with no mask:
    refused by name, where it failed on a None deep in the attention. A call with a mask but no segments is refused
    too: the trainer runs this attention only on packed batches (PairLogps passes the segments), and a row it did
    not lay out would attend across its pairs."""
    from training.dpo import logps

    class Attention(torch.nn.Module):
        pass

    q = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="Attention called the trainer's pair attention without"):
        logps.pair_attention(Attention(), q, q, q, mask, 1.0)
