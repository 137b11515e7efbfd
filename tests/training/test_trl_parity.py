"""Parity with TRL's DPOTrainer (test-only dependency): same models, same batch -> same loss and rewards in fp32
(pinned: the models load in fp32 and nothing autocasts); and a bf16 twin, both under bf16 autocast (the trainer's
bf16 policy), within the rounding bound of generation.backends.rounding."""
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from generation.backends.rounding import token_logp_bounds  # noqa: E402
from prefcore.chat import prompt_token_ids, response_token_ids  # noqa: E402
from training.dpo.config import DPOConfig  # noqa: E402
from training.dpo.logps import PairLogps, build_pair_batch, plain_sequence_logps  # noqa: E402
from training.dpo.trainer import _pair_loss  # noqa: E402

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Paris is a city."),
    ("Write a haiku about the sea.", "Waves fold into foam.", "The sea is wet and big and blue."),
    ("Explain gradient descent in one sentence.", "Step downhill along the gradient.", "I prefer not to."),
]


@pytest.fixture(scope="module")
def trl_setup(tiny_model_dir, tmp_path_factory):
    from tests.tiny import build_tiny_model

    ref_dir = build_tiny_model(tmp_path_factory.mktemp("ref") / "model", seed=1)
    rows = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tiny_model_dir, ref_dir, rows, tokenizer, tmp_path_factory.mktemp("trl")


def _trl_trainer(policy, ref, rows, tokenizer, out, loss_type):
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    args = TRLConfig(output_dir=str(out), per_device_train_batch_size=3, report_to="none", use_cpu=True,
                     beta=0.1, loss_type=[loss_type], max_length=None, save_strategy="no")
    return DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=tokenizer)


def test_tokenization_matches_trl_conversational(trl_setup):
    model_dir, ref_dir, rows, tokenizer, out = trl_setup
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = _trl_trainer(policy, None, rows, tokenizer, out, "sigmoid")
    for example, (p, c, _) in zip(trainer.train_dataset, PAIRS, strict=True):
        assert example["prompt_ids"] == prompt_token_ids(tokenizer, [{"role": "user", "content": p}])
        ours = response_token_ids(tokenizer, c)
        # TRL's chat template adds the newline after <|im_end|>; ours stops at the EOS
        assert example["chosen_ids"][: len(ours)] == ours
        assert tokenizer.decode(example["chosen_ids"][len(ours):]) == "\n"


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_loss_and_rewards_match_trl(trl_setup, loss_type):
    model_dir, ref_dir, rows, tokenizer, out = trl_setup
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    trainer = _trl_trainer(policy, ref, rows, tokenizer, out, loss_type)
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    batch = trainer.data_collator(examples)
    with torch.no_grad():
        trl_loss = float(trainer._compute_loss(trainer.model, batch, False))
    # TRL files the metrics under "eval" when the model is not in training mode
    metrics = {k: v[-1] for mode in ("train", "eval") for k, v in trainer._metrics[mode].items() if v}

    # ours on exactly the same token ids, with fresh copies of the same weights
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32).eval()
    ids = [(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for e in examples]
    pb = build_pair_batch(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        logps = PairLogps(policy)(pb)
        ref_c, ref_r = PairLogps(ref)(pb).chunk(2)
        loss, rc, rr = _pair_loss(DPOConfig(loss_type=loss_type, beta=0.1), logps, pb.token_counts, ref_c, ref_r, None)
    # IPO's loss is ~25 here: 1e-4 absolute is below fp32 resolution of the summed log-probs, so allow 1e-4 relative
    assert float(loss) == pytest.approx(trl_loss, abs=1e-4, rel=1e-4 if loss_type == "ipo" else 0)
    # TRL's own fused lm_head drifts up to ~1e-3 in summed log-probs (ours matches a float64 full-logits
    # computation to 1e-5, checked below), so rewards (beta x that) agree to 2e-4
    assert float(rc.mean()) == pytest.approx(metrics["rewards/chosen"], abs=2e-4)
    assert float(rr.mean()) == pytest.approx(metrics["rewards/rejected"], abs=2e-4)
    pc, pr = logps.chunk(2)
    assert float(pc.mean()) == pytest.approx(metrics["logps/chosen"], abs=1e-3)
    assert float(pr.mean()) == pytest.approx(metrics["logps/rejected"], abs=1e-3)
    plain = [plain_sequence_logps(policy, p, c) for p, c, _ in ids] + [plain_sequence_logps(policy, p, r) for p, _, r in ids]
    assert logps.tolist() == pytest.approx(plain, abs=1e-4)
    assert abs(trl_loss - 0.6931) > 1e-3 or loss_type != "sigmoid"  # the reference differs, so this is no ln 2 tie


def _bf16_plain(model, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """(the response's plain full-logits log-prob under bf16 autocast, its rounding bound sum_t 4uZ_t)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    logp = float(logits.log_softmax(-1).gather(1, torch.tensor(response)[:, None]).double().sum())
    return logp, float(token_logp_bounds(logits, torch.bfloat16).sum())


def test_bf16_loss_and_rewards_match_trl_within_the_rounding_bound(trl_setup):
    """bf16 twin of the test above (sigmoid loss), both sides under bf16 autocast with fp32 weights. Each summed
    log-prob is within B = sum_t 4uZ_t of the plain computation (u = 2^-8, Z_t the largest |logit| at token t), for
    TRL's and ours alike, so the two differ by at most 2B per sequence; h = (pc - rc) - (pr - rr) by at most the sum
    of the four sequences' 2B, the sigmoid loss -log sigmoid(beta h) (slope at most beta) by beta times that, and
    the mean rewards beta (p - r) by beta times the mean of two sequences' 2B."""
    model_dir, ref_dir, rows, tokenizer, out = trl_setup
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    trainer = _trl_trainer(policy, ref, rows, tokenizer, out, "sigmoid")
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    batch = trainer.data_collator(examples)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        trl_loss = float(trainer._compute_loss(trainer.model, batch, False))
    metrics = {k: v[-1] for mode in ("train", "eval") for k, v in trainer._metrics[mode].items() if v}

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32).eval()
    ids = [(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for e in examples]
    pb = build_pair_batch(ids, tokenizer.pad_token_id)
    beta = 0.1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logps = PairLogps(policy)(pb).float()
        ref_c, ref_r = PairLogps(ref)(pb).float().chunk(2)
    loss, rc, rr = _pair_loss(DPOConfig(loss_type="sigmoid", beta=beta), logps, pb.token_counts, ref_c, ref_r, None)
    bounds = {}
    for name, m in (("policy", policy), ("ref", ref)):
        for side, k in (("chosen", 1), ("rejected", 2)):
            bounds[name, side] = [2 * _bf16_plain(m, row[0], row[k])[1] for row in ids]
    per_pair = [sum(bounds[key][i] for key in bounds) for i in range(len(ids))]
    assert abs(float(loss) - trl_loss) <= beta * sum(per_pair) / len(ids)
    for side, ours in (("chosen", rc), ("rejected", rr)):
        room = beta * sum(bounds["policy", side][i] + bounds["ref", side][i] for i in range(len(ids))) / len(ids)
        assert abs(float(ours.mean()) - metrics[f"rewards/{side}"]) <= room
    pc, pr = logps.chunk(2)
    for side, ours in (("chosen", pc), ("rejected", pr)):
        assert abs(float(ours.mean()) - metrics[f"logps/{side}"]) <= sum(bounds["policy", side]) / len(ids)
