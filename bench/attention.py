"""Attention in the trainer's pair layout on the CPU: its own attention (pair_attention, the batch packed without
padding) against transformers' eager attention and SDPA on the padded batch, a training step's forward and backward
(and the reference pass's forward without gradients) on each length-grouped batch of the benchmark's pairs.

    .venv/bin/python bench/attention.py [--model DIR] [--pairs 32] [--batch-size 4] [--max-length 512]
                                        [--dtype auto|float32|bfloat16] [--repeats 3]

The trainer (training.dpo.logps.attention_for) runs pair_attention on the CPU for a batch whose eager attention
would keep at most EAGER_ATTENTION_BYTES for backward (transformers' eager attention for an architecture outside
PLAIN_ATTENTION), and SDPA above it; this measures the three on the same model, the same batches, in the same
process, interleaved (SDPA, eager, pairs, SDPA, ...), with the fastest of `--repeats` per batch and engine. It also
gives each batch's eager bytes against the budget, and the largest difference of the summed log-probs between
pair_attention and SDPA (they round differently in bf16). Prints a table headed by the CPU model and the dtype.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from bench.report import add_training_arguments, ensure_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_model(args.model)

    import torch

    from bench.report import machine_line
    from prefcore.hardware import describe_dtype, resolve_dtype
    from prefcore.memory import retain_freed_memory
    from training.dpo import logps
    from training.dpo.config import DPOConfig
    from training.dpo.data import length_grouped_batches, load_pairs_jsonl
    from training.dpo.trainer import _autocast, _pad_id, load_model, load_tokenizer, tokenize_pairs

    config = DPOConfig(batch_size=args.batch_size, max_length=args.max_length,
                       max_prompt_length=min(DPOConfig().max_prompt_length, args.max_length - 1))
    tokenizer = load_tokenizer(args.model)
    rows = tokenize_pairs(tokenizer, load_pairs_jsonl(args.data)[: args.pairs], config)
    batches = [logps.build_pair_batch([rows[i].row() for i in b], _pad_id(tokenizer))
               for b in length_grouped_batches([r.length for r in rows], args.batch_size, seed=0)]
    batches.sort(key=lambda pb: pb.input_ids.shape[1])
    dtype = resolve_dtype(args.dtype, "cpu")
    scorer = logps.PairLogps(load_model(args.model, "cpu"))
    budget, plain = logps.EAGER_ATTENTION_BYTES, logps.PLAIN_ATTENTION
    engines = ("sdpa", "eager", "pairs")

    def run(pb, engine: str, grad: bool) -> tuple[float, torch.Tensor]:
        # the budget and the list of plain architectures decide the engine (attention_for): no budget gives SDPA, an
        # unbounded one pair_attention, and transformers' eager attention for an architecture outside the list
        logps.EAGER_ATTENTION_BYTES = 0 if engine == "sdpa" else 2**62
        logps.PLAIN_ATTENTION = plain if engine == "pairs" else frozenset()
        start = time.perf_counter()
        with torch.set_grad_enabled(grad), _autocast("cpu", dtype):
            out = scorer(pb)
        if grad:
            out.float().sum().backward()
            scorer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, out.detach().float()

    lines = [f"{args.model.name}, {len(rows)} HH-RLHF pairs, batch {args.batch_size}, max length {args.max_length}, "
             f"dtype {describe_dtype(args.dtype, 'cpu', setting='--dtype')}; the fastest of {args.repeats} "
             "interleaved runs per batch and engine.", "", f"Machine: {machine_line()}.", "",
             "| rows x length | eager keeps MB (budget " f"{budget / 2**20:.0f}) | step SDPA s | step eager s | "
             "step pairs s | pairs/SDPA | pairs/eager | no-grad SDPA s | no-grad eager s | no-grad pairs s | "
             "pairs/SDPA | pairs/eager | largest log-prob difference, pairs and SDPA |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    totals = {key: 0.0 for engine in engines for key in (engine, f"{engine}-nograd")}

    def row(label: str, kept: str, t: dict[str, float], difference: str) -> str:
        return (f"| {label} | {kept} | {t['sdpa']:.2f} | {t['eager']:.2f} | {t['pairs']:.2f} | "
                f"{t['pairs'] / t['sdpa']:.2f} | {t['pairs'] / t['eager']:.2f} | {t['sdpa-nograd']:.2f} | "
                f"{t['eager-nograd']:.2f} | {t['pairs-nograd']:.2f} | {t['pairs-nograd'] / t['sdpa-nograd']:.2f} | "
                f"{t['pairs-nograd'] / t['eager-nograd']:.2f} | {difference} |")

    with retain_freed_memory():
        for engine in engines:
            run(batches[-1], engine, True)  # warm: first calls, allocations
        for pb in batches:
            best: dict[str, float] = {}
            outs: dict[str, torch.Tensor] = {}
            for _ in range(args.repeats):
                for engine in engines:
                    for grad in (True, False):
                        key = engine if grad else f"{engine}-nograd"
                        seconds, outs[engine] = run(pb, engine, grad)
                        best[key] = min(best.get(key, seconds), seconds)
            for key in totals:
                totals[key] += best[key]
            cfg = scorer.causal_lm().config
            b, length = pb.input_ids.shape
            kept = b * cfg.num_attention_heads * length * length * 6 * cfg.num_hidden_layers
            lines.append(row(f"{b} x {length}", f"{kept / 2**20:.0f}", best,
                             f"{float((outs['pairs'] - outs['sdpa']).abs().max()):.3f}"))
            print(lines[-1], file=sys.stderr, flush=True)
    logps.EAGER_ATTENTION_BYTES, logps.PLAIN_ATTENTION = budget, plain
    lines.append(row("all", "", totals, ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
