"""The training loop on the tiny model: first-step loss, learning a synthetic preference, references, LoRA, CLI."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair, load_pairs_jsonl
from training.dpo.trainer import TrainingCancelled, compute_logps, train_dpo

ROOT = Path(__file__).resolve().parents[2]
HH = ROOT / "data" / "hh-rlhf-sample.jsonl"
TOPICS = ["the sea", "a fox", "Paris", "gradient descent", "a dog", "the sky", "bread", "python", "music", "snow"]


def synthetic_pairs(n=20):
    """A learnable preference: a polite answer always beats a curt one."""
    return [
        PreferencePair(prompt=f"Tell me about {TOPICS[i % len(TOPICS)]}.", chosen="Thank you! Happy to help.",
                       rejected="No.", key=i)
        for i in range(n)
    ]


def test_first_step_loss_is_ln2_and_metrics_are_complete(tiny_model_dir, tmp_path, dtype):
    steps = []
    result = train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1), tiny_model_dir, synthetic_pairs(8), tmp_path / "out",
                       on_step=lambda s, t, m: steps.append((s, t, m)))
    first = steps[0][2]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/margin"] == pytest.approx(0, abs=1e-5) and first["logratio/mean"] == pytest.approx(0, abs=1e-5)
    assert [s for s, _, _ in steps] == [1, 2] and all(t == 2 for _, t, _ in steps)
    assert set(first) >= {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
                          "logps/chosen", "logps/rejected", "logratio/mean", "step_pairs", "grad_norm", "lr",
                          "tokens_per_s", "epoch"}
    assert first["step_pairs"] == 4  # one batch of 4, one process
    assert steps[-1][2]["epoch"] == pytest.approx(1.0)
    assert result.pairs == 8 and result.steps == 2 and result.pairs_per_s > 0 and result.peak_rss_mb > 0
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "tokenizer_config.json").exists()


def test_the_preference_loss_is_logged_apart_from_rpos_nll_so_a_flat_one_is_seen(tiny_model_dir, tmp_path, dtype):
    """With RPO's NLL term (the loop's default) the logged loss is ln 2 plus the NLL: the flat-loss warning read it
    and could never fire. The preference part is logged alone, and the warning reads it."""
    from training.dashboard import FLAT_WARNING, loss_is_flat

    steps = []
    config = DPOConfig(dtype=dtype, batch_size=2, epochs=3, learning_rate=1e-12, rpo_alpha=1.0)  # a step moves nothing
    train_dpo(config, tiny_model_dir, synthetic_pairs(4), tmp_path / "out", on_step=lambda s, t, m: steps.append(m))
    preference = [m["loss/preference"] for m in steps]
    assert preference == pytest.approx([math.log(2)] * 6, abs=1e-4)
    assert all(m["loss"] == pytest.approx(m["loss/preference"] + m["loss/nll"], rel=1e-6) for m in steps)
    assert all(m["loss/nll"] > 1 for m in steps)  # the tiny model's NLL a token: far from 0
    assert loss_is_flat(preference) and not loss_is_flat([m["loss"] for m in steps])
    assert FLAT_WARNING  # run_warnings reads loss/preference first (tests/compare/test_dashboards.py)


def test_short_run_learns_synthetic_preference(tiny_model_dir, tmp_path, dtype):
    pairs = synthetic_pairs(20)
    config = DPOConfig(dtype=dtype, batch_size=4, epochs=3, learning_rate=1e-3, warmup_ratio=0.0, beta=0.1)
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out")
    policy = compute_logps(tmp_path / "out", pairs, config)
    margins = [(pc - rc) - (pr - rr) for (pc, pr), (rc, rr) in zip(policy, result.reference_logps, strict=True)]
    assert sum(m > 0 for m in margins) / len(margins) >= 0.9
    assert result.final_metrics["rewards/accuracy"] >= 0.75
    assert result.final_metrics["loss"] < math.log(2)
    # the trained checkpoint loads with plain transformers
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_reference_logps_come_from_the_reference_and_cached_ones_are_kept(tiny_model_dir, tmp_path, dtype):
    pairs = synthetic_pairs(6)
    config = DPOConfig(dtype=dtype, batch_size=2)
    expected = compute_logps(tiny_model_dir, pairs, config)
    pairs[1].ref_chosen_logp, pairs[1].ref_rejected_logp = -1.5, -2.5
    seen = []
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", on_step=lambda s, t, m: seen.append(m))
    assert result.reference_logps[1] == (-1.5, -2.5)
    for i in (0, 2, 3, 4, 5):
        assert list(result.reference_logps[i]) == pytest.approx(list(expected[i]), abs=1e-4)
    assert len(result.reference_logps) == 6


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_first_steps_pairs_take_their_reference_from_that_steps_forward(tiny_model_dir, tmp_path, dtype,
                                                                               grad_accum):
    """The reference pass leaves out the first optimiser step's pairs (its grad_accum batches all run on the starting
    weights): their reference log-probs are that step's own forward's, equal to a pass of their own, so the first
    step's rewards are 0 and its loss log 2; the later pairs' come from the pass. With a warm start before the steps
    the policy is no longer the starting model there, and every pair goes through the pass."""
    from training.dpo.trainer import _first_step_rows, load_tokenizer, tokenize_pairs

    pairs = synthetic_pairs(8)
    config = DPOConfig(dtype=dtype, batch_size=2, grad_accum=grad_accum, learning_rate=1e-3)
    expected = compute_logps(tiny_model_dir, pairs, config)
    passes, steps = [], []
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", on_step=lambda s, t, m: steps.append(m),
                       on_stage=lambda stage, done, total, then: passes.append(total))
    first = _first_step_rows(tokenize_pairs(load_tokenizer(tiny_model_dir), pairs, config), list(range(8)), config)
    assert len(first) == 2 * grad_accum
    assert set(passes) == {4 - grad_accum}  # batches of the reference pass
    for i in range(8):
        assert list(result.reference_logps[i]) == pytest.approx(list(expected[i]), abs=1e-4)
    assert steps[0]["rewards/chosen"] == steps[0]["rewards/rejected"] == 0
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert steps[1]["rewards/chosen"] != 0  # the second step's pairs meet trained weights and the pass's reference

    passes.clear()
    train_dpo(DPOConfig(dtype=dtype, batch_size=2, sft_warmup_epochs=1), tiny_model_dir, pairs, tmp_path / "warm",
              on_stage=lambda stage, done, total, then: passes.append((stage, total)))
    assert {total for stage, total in passes if stage.startswith("computing reference")} == {4}


def test_separate_reference_dir_is_used(tiny_model_dir, tmp_path, dtype):
    from tests.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    pairs = synthetic_pairs(4)
    config = DPOConfig(dtype=dtype, batch_size=4)
    expected = compute_logps(other, pairs, config)
    steps = []
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", reference_dir=other,
                       on_step=lambda s, t, m: steps.append(m))
    flat = [x for pair in result.reference_logps for x in pair]
    assert flat == pytest.approx([x for pair in expected for x in pair], abs=1e-4)
    assert steps[0]["loss"] != pytest.approx(math.log(2), abs=1e-3)


def test_lora_saves_an_adapter_and_trains(tiny_model_dir, tmp_path, dtype):
    config = DPOConfig(dtype=dtype, batch_size=4, lora=True, lora_r=4, lora_alpha=8, learning_rate=1e-2, epochs=2)
    steps = []
    train_dpo(config, tiny_model_dir, synthetic_pairs(8), tmp_path / "out", on_step=lambda s, t, m: steps.append(m))
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # fresh adapter = reference
    assert steps[-1]["loss"] < steps[0]["loss"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "out")


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust", "kto", "rrhf"])
def test_every_loss_type_trains(tiny_model_dir, tmp_path, loss_type, dtype):
    config = DPOConfig(dtype=dtype, batch_size=4, loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0,
                       rpo_alpha=0.5 if loss_type == "hinge" else 0.0, grad_accum=2, epochs=1)
    result = train_dpo(config, tiny_model_dir, synthetic_pairs(8), tmp_path / "out")
    assert result.steps == 1 and math.isfinite(result.mean_loss)


def test_soft_labels_and_sft_warmup(tiny_model_dir, tmp_path, dtype):
    pairs = synthetic_pairs(4)
    for p in pairs:
        p.preference_prob = 0.5  # a coin flip: -(log sig(x) + log sig(-x)) / 2, ln 2 at margin 0 and more elsewhere
    steps = []
    train_dpo(DPOConfig(dtype=dtype, batch_size=4, sft_warmup_epochs=1), tiny_model_dir, pairs, tmp_path / "out",
              on_step=lambda s, t, m: steps.append(m))
    # the reference is the starting model, so the warm start moved the policy off it: margins near, not at, zero
    assert steps[0]["rewards/chosen"] != 0.0
    assert math.log(2) - 1e-6 <= steps[0]["loss"] < math.log(2) + 1e-2


def test_should_stop_cancels(tiny_model_dir, tmp_path, dtype):
    with pytest.raises(TrainingCancelled):
        train_dpo(DPOConfig(dtype=dtype, batch_size=2), tiny_model_dir, synthetic_pairs(4), tmp_path / "out", should_stop=lambda: True)
    assert not (tmp_path / "out").exists()


def test_identical_pairs_are_dropped_and_long_ones_truncated(tiny_model_dir, tmp_path, dtype):
    pairs = synthetic_pairs(4) + [PreferencePair(prompt="x", chosen="same", rejected="same"),
                                  PreferencePair(prompt="long " * 300, chosen="a", rejected="b")]
    result = train_dpo(DPOConfig(dtype=dtype, batch_size=4, max_length=64, max_prompt_length=32), tiny_model_dir, pairs,
                       tmp_path / "out")
    assert result.dropped == 1 and result.truncated == 1 and result.pairs == 5


def test_config_round_trip_and_errors():
    cfg = DPOConfig(beta=0.2, lora=True)
    assert DPOConfig.from_dict(cfg.to_dict()) == cfg
    assert DPOConfig.from_dict({"epochs": 2.0, "beta": 1}).epochs == 2
    with pytest.raises(ValueError, match="unknown field 'betta'"):
        DPOConfig.from_dict({"betta": 0.1})
    with pytest.raises(ValueError, match="beta"):
        DPOConfig.from_dict({"beta": -1})
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig.from_dict({"loss_type": "dpo++"})
    with pytest.raises(ValueError, match="batch_size"):
        DPOConfig.from_dict({"batch_size": "4"})
    with pytest.raises(ValueError, match="lora"):
        DPOConfig.from_dict({"lora": 1})


def test_load_pairs_formats_and_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    rows = [
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Go", "preference_prob": 0.8, "id": 7},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "assistant", "content": "Go"}]},
        {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}]},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: How?\n\nAssistant: Fine",
         "rejected": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: How?\n\nAssistant: Bad"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = load_pairs_jsonl(good)
    assert pairs[0].preference_prob == 0.8 and pairs[0].key == 7
    assert pairs[1].prompt == pairs[2].prompt == [{"role": "user", "content": "Hi"}]
    assert [(p.chosen, p.rejected) for p in pairs] == [("Hello", "Go")] * 3 + [("Fine", "Bad")]
    assert pairs[3].prompt == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                               {"role": "user", "content": "How?"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'rejected' is missing"):
        load_pairs_jsonl(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        load_pairs_jsonl(bad)
    bad.write_text(json.dumps({**rows[0], "preference_prob": 2}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'preference_prob'"):
        load_pairs_jsonl(bad)
    assert len(load_pairs_jsonl(HH)) == 100
    for value, shown in (("NaN", "nan"), ("1e999", "inf"), ("3.5", "3.5")):  # no log-prob: refused, not trained on
        row = '{"prompt": "p", "chosen": "c", "rejected": "r", "ref_chosen_logp": ' + value + ', "ref_rejected_logp": -1}'
        bad.write_text(row + "\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:1: field 'ref_chosen_logp': expected a finite log-probab.*{shown}"):
            load_pairs_jsonl(bad)
    bad.write_bytes(json.dumps(rows[0]).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not UTF-8 text"):
        load_pairs_jsonl(bad)
    bad.write_text("[" * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: JSON nested too deeply"):
        load_pairs_jsonl(bad)
    # the lines the import page reads: a byte-order mark and old Mac line ends are no error; a key given twice, which
    # json.loads settled by keeping the last, and an integer past 4,300 digits are refused with their line
    bad.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows[0]).encode() + b"\r" + json.dumps(rows[1]).encode() + b"\r")
    assert [p.chosen for p in load_pairs_jsonl(bad)] == ["Hello", "Hello"]
    bad.write_text(json.dumps(rows[0]) + "\n" + '{"prompt": "p", "chosen": "a", "rejected": "b", "chosen": "z"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: the key 'chosen' is given twice"):
        load_pairs_jsonl(bad)
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "ref_chosen_logp": -' + "9" * 5000 + "}\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: a number of more than 4,300 digits"):
        load_pairs_jsonl(bad)


def test_cli_prints_json_lines_and_summary(tiny_model_dir, tmp_path, dtype):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
                              for p in synthetic_pairs(4)))
    cmd = [sys.executable, "-m", "training.dpo.train", "--model", str(tiny_model_dir), "--data", str(data),
           "--out", str(tmp_path / "out"), "--batch-size", "2", "--epochs", "1", "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    # the reference pass first (4 pairs, batch 2: the second batch's; the first step's own forward gives the first
    # batch's; 2 optimiser steps to come), then the steps
    assert lines[:2] == [{"stage": "computing reference log-probs", "done": d, "total": 1, "then": 2} for d in range(2)]
    assert [line["step"] for line in lines[2:-1]] == [1, 2]
    assert set(lines[-1]) >= {"pairs", "loss", "pairs_per_s", "peak_rss_mb"} and lines[-1]["pairs"] == 4
    data.write_text('{"prompt": "x"}\n')
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "pairs.jsonl:1: field 'chosen' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a --result that cannot be written is said before training, not found after it (the run's report lost)
    proc = subprocess.run([*cmd, "--result", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "--result" in proc.stderr and "is a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dtype_follows_hardware():
    from prefcore.hardware import fastest_dtype
    from training.dpo.trainer import resolve_dtype

    assert resolve_dtype(DPOConfig(), "cpu") == fastest_dtype("cpu")
    assert resolve_dtype(DPOConfig(dtype="float32"), "cpu") == torch.float32
    assert resolve_dtype(DPOConfig(dtype="bfloat16"), "cpu") == torch.bfloat16


@pytest.mark.parametrize("max_norm", [0.0, 1e-3, 1e6])
def test_clip_gradients_matches_torch_and_the_exact_norm(max_norm):
    """The trainer's clip: the norm is the fp64 norm of all gradients together; the gradients are scaled as
    torch.nn.utils.clip_grad_norm_ scales them (not at all when max_norm is 0 or above the norm)."""
    from training.dpo.trainer import clip_gradients

    torch.manual_seed(0)
    shapes = [(1536, 576), (576,), (49, 3), (7,)]
    grads = [torch.randn(s) * (10.0 ** k) for k, s in enumerate(shapes)]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    theirs = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, q, g in zip(ours, theirs, grads, strict=True):
        p.grad, q.grad = g.clone(), g.clone()
    ours.append(torch.nn.Parameter(torch.zeros(3)))  # no gradient: skipped, as torch skips it
    exact = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    norm = clip_gradients(ours, max_norm)
    torch_norm = float(torch.nn.utils.clip_grad_norm_(theirs, max_norm if max_norm else float("inf")))
    assert norm == pytest.approx(exact, rel=1e-6) and norm == pytest.approx(torch_norm, rel=1e-4)
    for p, q in zip(ours[:-1], theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=0)
    scaled = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ours[:-1]))
    assert scaled == pytest.approx(min(exact, max_norm) if max_norm else exact, rel=1e-5)


def test_clip_gradients_leaves_a_non_finite_gradient_alone():
    from training.dpo.trainer import clip_gradients

    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([1.0, float("inf"), 2.0, 3.0])
    assert math.isinf(clip_gradients([p], 1.0))
    assert p.grad.tolist()[::2] == [1.0, 2.0]  # not multiplied by the nan that inf / inf makes


def _five_pairs(base=None, offsets=(5.0, 5.0, 5.0, -5.0, -5.0)):
    """Five pairs of one length; with `base` (their log-probs under the model), cached references set so that
    h = -offset for each: three pairs the wrong way round, two the right way."""
    pairs = [PreferencePair(prompt=f"Tell me about {t}.", chosen="Thank you! Happy to help.", rejected="No.")
             for t in ["a fox", "a dog", "snow", "bread", "music"]]
    for p, (c, r), d in zip(pairs, base or [], offsets, strict=False):
        p.ref_chosen_logp, p.ref_rejected_logp = c + d, r
    return pairs


def test_gradient_accumulation_is_one_batch_of_the_groups_pairs(tiny_model_dir, tmp_path):
    """Each batch's mean loss was divided by the number of batches, so a pair in a short last batch weighed more:
    batch 3 x accumulation 2 over 5 pairs logged loss 0.724, accuracy 0.5 and margin 0 where the 5 pairs as one
    batch give 0.774, 0.4 and -0.1 (an outside review). Computed by hand: beta 0.1, h = -offset."""
    base = compute_logps(tiny_model_dir, _five_pairs(), DPOConfig(dtype="float32"))
    offsets = (5.0, 5.0, 5.0, -5.0, -5.0)
    want = {"loss": sum(math.log1p(math.exp(0.1 * d)) for d in offsets) / 5, "rewards/accuracy": 0.4,
            "rewards/margin": sum(-0.1 * d for d in offsets) / 5}
    firsts = {}
    for batch, accumulate in [(5, 1), (3, 2), (2, 3), (1, 5)]:
        steps = []
        config = DPOConfig(dtype="float32", epochs=1, learning_rate=1e-9, warmup_ratio=0.0, max_grad_norm=0.0,
                           batch_size=batch, grad_accum=accumulate)
        train_dpo(config, tiny_model_dir, _five_pairs(base), tmp_path / f"{batch}x{accumulate}",
                  on_step=lambda s, t, m, steps=steps: steps.append(m))
        firsts[batch, accumulate] = steps[0]
        for name, value in want.items():
            assert steps[0][name] == pytest.approx(value, abs=1e-5), (batch, accumulate, name)
    norms = [m["grad_norm"] for m in firsts.values()]
    assert max(norms) - min(norms) < 1e-4 * max(norms)  # the same gradient, however the pairs were split


def test_the_reference_is_the_starting_model_before_an_sft_warm_start_with_or_without_lora(tiny_model_dir, tmp_path):
    """Without LoRA the reference log-probs were taken after the warm start, of the warmed model (and the first DPO
    step's loss was ln 2); with LoRA, of the starting model, as --model's help says of both."""
    pairs = _five_pairs()[:4]
    start = compute_logps(tiny_model_dir, pairs, DPOConfig(dtype="float32"))
    for lora in (False, True):
        config = DPOConfig(dtype="float32", batch_size=4, epochs=1, sft_warmup_epochs=3, learning_rate=1e-2,
                           lora=lora, lora_r=4, lora_alpha=8)
        result = train_dpo(config, tiny_model_dir, _five_pairs()[:4], tmp_path / f"lora-{lora}")
        flat = [x for pair in result.reference_logps for x in pair]
        assert flat == pytest.approx([x for pair in start for x in pair], abs=1e-4), lora


def test_a_reference_of_another_tokenizer_is_refused_before_training(tiny_model_dir, tmp_path):
    """The reference scores the model's token ids: one of a smaller vocabulary crashed with an IndexError, and one
    of a larger vocabulary and another tokenizer trained and saved against log-probs of other tokens."""
    from tests.tiny import build_tiny_model

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Hi", "chosen": "Hello there.", "rejected": "No."}\n'
                    '{"prompt": "Yo", "chosen": "Hey, friend.", "rejected": "Go away."}\n')
    for name, vocab in (("smaller", 300), ("larger", 512)):
        other = build_tiny_model(tmp_path / name, vocab_size=vocab, seed=3)
        proc = subprocess.run([sys.executable, "-m", "training.dpo.train", "--model", str(tiny_model_dir),
                               "--reference", str(other), "--data", str(data), "--out", str(tmp_path / f"out-{name}"),
                               "--dtype", "float32", "--epochs", "1", "--batch-size", "2"],
                              capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the reference model") and "share the model's tokenizer" in last
        assert "Traceback" not in proc.stderr and not (tmp_path / f"out-{name}" / "model.safetensors").exists()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings from Linux's /proc")
def test_the_weights_a_run_trains_are_read_into_its_own_memory_not_mapped_from_the_checkpoint(tiny_model_dir, tmp_path):
    """A weight mapped copy-on-write from model.safetensors pays a page fault for every page of it at the optimiser's
    first write (2.3 s of the first step on the default model on a fresh virtual machine): the trainer reads the file
    for the model it trains. Loaded from a copy of the checkpoint that nothing else in this process has loaded (a test
    before may hold a model mapped from the shared one); a model only read stays mapped, which shows the check sees
    a mapping where there is one."""
    import os

    from training.dpo.trainer import load_model

    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    weights = os.path.realpath(folder / "model.safetensors")
    assert Path(weights).exists()

    def mapped() -> list[str]:
        return [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(" " + weights)]

    held = [load_model(folder, "cpu", trained=True)]  # each model held while the mappings are read: freed, a model
    assert mapped() == []                             # mapped from the file would unmap it
    held.append(load_model(folder, "cpu"))
    assert mapped() != []


class _OneProcessAccelerator:
    """What _train_dpo asks of accelerate's Accelerator, in one process: a run as `accelerate launch` starts it
    without a process group (the broadcast itself is tests/training/test_accelerate.py's)."""

    def prepare(self, model):
        return model

    def wait_for_everyone(self):
        pass


@pytest.mark.parametrize(("lora", "launched", "read"), [(False, False, True), (True, False, False), (True, True, True)])
def test_a_run_reads_into_memory_the_model_it_trains_and_maps_those_it_only_reads(tiny_model_dir, tmp_path, monkeypatch,
                                                                                  lora, launched, read):
    """The run's own loads: the policy it trains read into memory (the test above: not mapped), the reference it only
    reads mapped; with LoRA, whose optimiser writes only the adapters, the base mapped too, except under accelerate
    launch, where DDP writes every weight once as it broadcasts rank 0's."""
    from training.dpo import trainer

    loads, load = [], trainer.load_model

    def recording(model_dir, device, *, trained=False):
        loads.append((Path(model_dir).name, trained))
        return load(model_dir, device, trained=trained)

    class Launched(trainer._Dist):
        def __init__(self):
            super().__init__()
            self.accelerator = _OneProcessAccelerator()

        def gather(self, obj):
            return obj

        def mean(self, values):
            return values

    monkeypatch.setattr(trainer, "load_model", recording)
    if launched:
        monkeypatch.setattr(trainer, "_Dist", Launched)
    reference = Path(shutil.copytree(tiny_model_dir, tmp_path / "reference"))
    train_dpo(DPOConfig(batch_size=4, epochs=1, lora=lora), tiny_model_dir, synthetic_pairs(4), tmp_path / "out",
              reference_dir=reference)
    assert loads == [("reference", False), (tiny_model_dir.name, read)]


def test_a_reference_that_is_the_model_itself_is_read_from_the_policy(tiny_model_dir, tmp_path, dtype, monkeypatch):
    """A round of the base version whose reference is the base (the training service's default) named the same
    folder twice: a second copy of the model was loaded for the reference pass, and the first step's pairs went
    through it too. The same folder is now the policy before its first step: one model loaded, the same values."""
    from training.dpo import trainer

    pairs = synthetic_pairs(8)
    config = DPOConfig(dtype=dtype, batch_size=2)
    expected = compute_logps(tiny_model_dir, pairs, config)
    loaded, passes = [], []
    load = trainer.load_model
    monkeypatch.setattr(trainer, "load_model", lambda *a, **k: loaded.append(a[0]) or load(*a, **k))
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", reference_dir=tiny_model_dir / ".",
                       on_stage=lambda stage, done, total, then: passes.append(total))
    assert len(loaded) == 1 and set(passes) == {3}  # 4 batches, the first step's taken in its own forward
    for i in range(8):
        assert list(result.reference_logps[i]) == pytest.approx(list(expected[i]), abs=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_tied_embeddings_rows_added_in_place_train_the_weights_its_dense_gradient_did(tiny_model_dir, tmp_path,
                                                                                       monkeypatch, dtype):
    """One process, full fine-tune, head tied to the input embedding (the tiny model, as SmolLM2): the embedding's
    gradient rows are added in place into the weight's gradient, which already holds the head's. Same steps (losses,
    gradient norms) and the same trained weights as with autograd's dense gradient, up to the order of fp32
    additions, over two epochs with gradient accumulation and clipping; and it is used, with the head's gradient
    there first in every backward (no dense gradient is made for the embedding)."""
    from safetensors.torch import load_file

    import training.dpo.trainer as trainer

    found = []
    backward = trainer._RowsIntoGrad.backward

    def watched(ctx, grad):
        found.append(ctx.embedding.weight.grad is not None)
        return backward(ctx, grad)

    monkeypatch.setattr(trainer._RowsIntoGrad, "backward", staticmethod(watched))
    config = DPOConfig(dtype=dtype, epochs=2, batch_size=2, grad_accum=2, learning_rate=1e-3, warmup_ratio=0.0,
                       max_grad_norm=1.0)
    runs = {}
    for sparse in (True, False):
        monkeypatch.setattr(trainer, "TIED_ROWS_IN_PLACE", sparse)
        steps = []
        train_dpo(config, tiny_model_dir, synthetic_pairs(12), tmp_path / str(sparse),
                  on_step=lambda s, t, m, steps=steps: steps.append((m["loss"], m["grad_norm"])))
        runs[sparse] = steps, load_file(tmp_path / str(sparse) / "model.safetensors")
    assert len(found) == 12 and all(found)  # 6 steps of 2 batches, in the first run only
    (sparse_steps, sparse_weights), (dense_steps, dense_weights) = runs[True], runs[False]
    assert len(sparse_steps) == len(dense_steps) == 6
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    flat = [x for step in sparse_steps for x in step]
    assert flat == pytest.approx([x for step in dense_steps for x in step], rel=tolerance, abs=tolerance)
    assert sparse_weights.keys() == dense_weights.keys()
    for name, weight in sparse_weights.items():
        assert torch.allclose(weight, dense_weights[name], atol=tolerance, rtol=tolerance), name
    assert not torch.equal(sparse_weights["model.embed_tokens.weight"],
                           load_file(tiny_model_dir / "model.safetensors")["model.embed_tokens.weight"])


def test_the_free_heap_is_given_back_after_the_steps_and_before_the_checkpoint_is_written(tiny_model_dir, tmp_path,
                                                                                          monkeypatch):
    """The optimiser's state and the steps' buffers, free once the steps end, go back to the system before the
    checkpoint is written, so its pages take theirs (prefcore.memory.give_back_free); not before the last step."""
    import training.dpo.trainer as trainer

    events = []
    give_back, save = trainer.give_back_free, trainer.save_whole
    monkeypatch.setattr(trainer, "give_back_free", lambda: (events.append("give back"), give_back())[1])
    monkeypatch.setattr(trainer, "save_whole", lambda *a: (events.append("save"), save(*a))[1])
    train_dpo(DPOConfig(dtype="float32", batch_size=2), tiny_model_dir, synthetic_pairs(4), tmp_path / "out",
              on_step=lambda s, t, m: events.append("step"))
    steps = events.count("step")
    assert steps >= 2 and events == ["step"] * steps + ["give back", "save"]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_tied_embeddings_weight_is_freed_as_the_run_returns(tiny_model_dir, tmp_path, monkeypatch):
    """The run's model, the tied embedding's weight (vocabulary x hidden) included, is freed as train_dpo returns, not
    at the cyclic collector's next full pass: the replaced forward must not hold its own module (a lambda over the
    embedding, stored on it, was a cycle that kept SmolLM2-135M's 113 MB weight past the run, and past the free
    heap's giving back)."""
    import gc
    import weakref

    import training.dpo.trainer as trainer

    weights, replaced = [], []
    load, rows_in_place = trainer.load_model, trainer._tied_embedding_rows_in_place

    def loaded(*args, **kwargs):
        model = load(*args, **kwargs)
        weights.append(weakref.ref(model.get_input_embeddings().weight))
        return model

    def patched(model):
        rows_in_place(model)
        replaced.append("forward" in vars(model.get_input_embeddings()))

    monkeypatch.setattr(trainer, "load_model", loaded)
    monkeypatch.setattr(trainer, "_tied_embedding_rows_in_place", patched)
    gc.collect()
    gc.disable()
    try:
        train_dpo(DPOConfig(dtype="float32", batch_size=2), tiny_model_dir, synthetic_pairs(4), tmp_path / "out")
        assert replaced == [True] and len(weights) == 1
        assert weights[0]() is None
    finally:
        gc.enable()


def test_the_tied_embeddings_rows_go_in_place_only_for_a_model_on_the_cpu(tiny_model_dir):
    """Measured on the CPU only; on CUDA index_add_ adds its rows with atomics, in no fixed order, where autograd's
    dense backward is repeatable: a model elsewhere (here the meta device) keeps nn.Embedding's own forward."""
    import training.dpo.trainer as trainer

    model = trainer.load_model(tiny_model_dir, torch.device("cpu"), trained=True)
    trainer._tied_embedding_rows_in_place(model)
    assert "forward" in vars(model.get_input_embeddings())
    model = trainer.load_model(tiny_model_dir, torch.device("cpu"), trained=True).to("meta")
    model.get_output_embeddings().weight = model.get_input_embeddings().weight  # tied again (.to made two Parameters)
    trainer._tied_embedding_rows_in_place(model)
    assert "forward" not in vars(model.get_input_embeddings())
