"""The KL a round reports and its gate bounds: at each answer position, the KL of the two models' next-token
distributions over the whole vocabulary, summed over the answer (training.dpo.logps.position_kl)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny import build_tiny_model
from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair
from training.dpo.trainer import compute_kl, load_tokenizer, tokenize_pairs
from training.evaluation import _mean_kl

PAIRS = [
    PreferencePair(prompt="What is the capital of France?", chosen="The capital of France is Paris.", rejected="."),
    PreferencePair(prompt="Write a haiku about the sea.", chosen="Waves fold into foam. The quick brown fox.",
                   rejected="."),
    PreferencePair(prompt="Explain gradient descent.", chosen="Thank you!", rejected="."),
]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("kl")
    return build_tiny_model(root / "policy", seed=0), build_tiny_model(root / "reference", seed=1)


def _direct(policy_dir, reference_dir, config) -> list[list[float]]:
    """Full logits of prompt + answer from each model in fp64, the KL at each answer position."""
    rows = tokenize_pairs(load_tokenizer(policy_dir), PAIRS, config)
    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64) for d in (policy_dir, reference_dir)]
    out = []
    for row in rows:
        ids = torch.tensor([row.prompt_ids + row.chosen_ids])
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(input_ids=ids).logits[0], dim=-1) for m in models)
        span = range(len(row.prompt_ids) - 1, len(row.prompt_ids) + len(row.chosen_ids) - 1)
        out.append([float((lp[t].exp() * (lp[t] - lq[t])).sum()) for t in span])
    return out


def test_the_kl_at_each_answer_position_is_the_next_token_kl_over_the_vocabulary(two_models):
    policy, reference = two_models
    config = DPOConfig(dtype="float32", batch_size=2)
    got = compute_kl(str(policy), str(reference), PAIRS, config)
    want = _direct(policy, reference, config)
    assert [len(k) for k in got] == [len(k) for k in want] and all(len(k) > 1 for k in got)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-4, abs=1e-6)
    assert all(k >= 0 for answer in got for k in answer) and _mean_kl(got) > 0.01
    assert _mean_kl(got) == pytest.approx(sum(map(sum, want)) / len(want), rel=1e-4)
    # a model against itself: nothing, at every position
    assert all(k == pytest.approx(0, abs=1e-6) for answer in compute_kl(str(policy), str(policy), PAIRS, config)
               for k in answer)


def test_the_kl_in_bf16_stays_near_the_fp64_one(two_models):
    policy, reference = two_models
    got = compute_kl(str(policy), str(reference), PAIRS, DPOConfig(dtype="bfloat16", batch_size=2))
    want = _direct(policy, reference, DPOConfig(dtype="float32"))
    # bf16 rounds the logits to about 3 digits (docs/numerics.md): each answer's KL to within 5%
    for g, w in zip(got, want, strict=True):
        assert sum(g) == pytest.approx(sum(w), rel=0.05, abs=1e-3) and min(g) >= 0


def test_a_reference_with_another_vocabulary_is_refused(two_models, tmp_path):
    policy, _ = two_models
    other = build_tiny_model(tmp_path / "other", vocab_size=320)
    with pytest.raises(ValueError, match="must share the model.s tokenizer"):
        compute_kl(str(policy), str(other), PAIRS, DPOConfig(dtype="float32"))


def test_chunks_of_positions_give_the_same_kl(two_models):
    from training.dpo.logps import PairLogps, build_pair_batch, position_kl
    from training.dpo.trainer import load_model

    policy, reference = two_models
    rows = tokenize_pairs(load_tokenizer(policy), PAIRS, DPOConfig(dtype="float32"))
    batch = build_pair_batch([r.row() for r in rows], 0)
    scorers = PairLogps(load_model(policy, "cpu")), PairLogps(load_model(reference, "cpu"))
    whole = position_kl(*scorers, batch)
    assert whole.shape[0] > 7
    # The same up to rounding: a matrix product over 3 rows may round differently from one over all of them (oneDNN
    # on AVX2 picks another kernel), so bound the KL's change by the logits' change delta: each log-softmax moves by
    # at most 2 delta, so d = lp - lq by 4 delta and KL = sum p d by (4 + 2 max|d|) delta, plus the sum's own rounding
    # (V terms: V u sum p|d|). A chunk scored from the wrong rows changes the KL by its own size, about 0.02 here.
    with torch.no_grad():
        logits, deltas = [], []
        for scorer in scorers:
            hidden, head = scorer.hidden(batch), scorer.causal_lm().get_output_embeddings()
            full = head(hidden).float()
            parts = torch.cat([head(hidden[s:s + 3]).float() for s in range(0, hidden.shape[0], 3)])
            logits.append(full)
            deltas.append(float((full - parts).abs().max()))
        d = torch.log_softmax(logits[0], -1) - torch.log_softmax(logits[1], -1)
        weighted = (torch.softmax(logits[0], -1) * d.abs()).sum(-1)
    u = torch.finfo(torch.float32).eps / 2
    bound = (4 + 2 * d.abs().max(-1).values) * max(deltas) + d.shape[-1] * u * weighted
    change = (position_kl(*scorers, batch, chunk=3) - whole).abs()
    assert bool((change <= bound).all()), f"chunked KL moved {float(change.max()):.3g}, past {float(bound.min()):.3g}"
    assert float(bound.max()) < 1e-3 * float(whole.min())  # the bound itself says "the same", not "anything"


def test_the_kl_is_summed_over_the_whole_answer_whatever_the_runs_max_length(two_models):
    """The round's KL was summed over the answer tokens that fit the run's max_length, then read per token over the
    whole answer (the gate's drift budget): a run with a short max_length reported a fraction of its drift."""
    from prefcore.chat import response_token_ids

    policy, reference = two_models
    tokenizer = load_tokenizer(policy)
    short = DPOConfig(dtype="float32", batch_size=2, max_length=12, max_prompt_length=4)
    got = compute_kl(str(policy), str(reference), PAIRS, short)
    assert [len(k) for k in got] == [len(response_token_ids(tokenizer, p.chosen)) for p in PAIRS]
    # a prompt longer than max_prompt_length keeps its end, as in training: the answers' positions are the same ones
    whole = compute_kl(str(policy), str(reference), PAIRS, DPOConfig(dtype="float32", batch_size=2))
    assert [len(k) for k in got] == [len(k) for k in whole]


def test_the_kl_is_taken_at_the_positions_the_answer_was_sampled_as(two_models):
    """The answer's text was tokenized again, with an end token: a cut answer's never-sampled end position was
    counted, and on the tiny model 24 sampled tokens were scored as 32-43 positions (an outside review). Given the
    sampled tokens, the KL has one position per token drawn, each the KL a direct computation gives there."""
    policy, reference = two_models
    config = DPOConfig(dtype="float32", batch_size=2)
    tokenizer = load_tokenizer(policy)
    sampled = [[7, 12, 40, 41, 42], None, [100, 3, 3, 3, 3, 3, 3, 3]]  # as drawn, no end token (cut); text for one
    got = compute_kl(str(policy), str(reference), PAIRS, config, chosen_ids=sampled)
    assert [len(answer) for answer in got] == [5, len(tokenize_pairs(tokenizer, PAIRS[1:2], config)[0].chosen_ids), 8]
    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64) for d in (policy, reference)]
    prompt = tokenize_pairs(tokenizer, PAIRS[:1], config)[0].prompt_ids
    ids = torch.tensor([prompt + sampled[0]])
    with torch.no_grad():
        lp, lq = (torch.log_softmax(m(input_ids=ids).logits[0], dim=-1) for m in models)
    want = [float((lp[t].exp() * (lp[t] - lq[t])).sum()) for t in range(len(prompt) - 1, len(prompt) + 4)]
    assert got[0] == pytest.approx(want, abs=1e-4)
