"""Attention in the trainer's pair layout on the CPU: eager attention against SDPA, a training step's forward and
backward (and the reference pass's forward without gradients) on each length-grouped batch of the benchmark's pairs.

    .venv/bin/python bench/attention.py [--model DIR] [--pairs 32] [--batch-size 4] [--max-length 512]
                                        [--dtype auto|float32|bfloat16] [--repeats 3]

The trainer (training.dpo.logps.attention_for) runs eager attention on the CPU for a batch whose eager attention
keeps at most EAGER_ATTENTION_BYTES for backward, and SDPA above it; this measures the two on the same model, the same
batches, in the same process, interleaved (SDPA, eager, SDPA, ...), with the fastest of `--repeats` per batch and
engine. It also gives each batch's eager bytes against the budget, and the largest difference of the summed
log-probs between the two (they round differently in bf16). Prints a table headed by the CPU model and the dtype.
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
    budget = logps.EAGER_ATTENTION_BYTES

    def run(pb, engine: str, grad: bool) -> tuple[float, torch.Tensor]:
        # the budget decides the engine (attention_for): none gives SDPA, an unbounded one eager
        logps.EAGER_ATTENTION_BYTES = 0 if engine == "sdpa" else 2**62
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
             "eager/SDPA | no-grad SDPA s | no-grad eager s | eager/SDPA | largest log-prob difference |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    totals = {key: 0.0 for key in ("sdpa", "eager", "sdpa-nograd", "eager-nograd")}
    with retain_freed_memory():
        run(batches[-1], "sdpa", True)
        run(batches[-1], "eager", True)  # warm: first calls, allocations
        for pb in batches:
            best: dict[str, float] = {}
            outs: dict[str, torch.Tensor] = {}
            for _ in range(args.repeats):
                for engine in ("sdpa", "eager"):
                    for grad in (True, False):
                        key = engine if grad else f"{engine}-nograd"
                        seconds, outs[engine] = run(pb, engine, grad)
                        best[key] = min(best.get(key, seconds), seconds)
            for key in totals:
                totals[key] += best[key]
            cfg = scorer.causal_lm().config
            b, length = pb.input_ids.shape
            kept = b * cfg.num_attention_heads * length * length * 6 * cfg.num_hidden_layers
            lines.append(f"| {b} x {length} | {kept / 2**20:.0f} | {best['sdpa']:.2f} | {best['eager']:.2f} | "
                         f"{best['eager'] / best['sdpa']:.2f} | {best['sdpa-nograd']:.2f} | "
                         f"{best['eager-nograd']:.2f} | {best['eager-nograd'] / best['sdpa-nograd']:.2f} | "
                         f"{float((outs['eager'] - outs['sdpa']).abs().max()):.3f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    logps.EAGER_ATTENTION_BYTES = budget
    lines.append(f"| all | | {totals['sdpa']:.2f} | {totals['eager']:.2f} | {totals['eager'] / totals['sdpa']:.2f} | "
                 f"{totals['sdpa-nograd']:.2f} | {totals['eager-nograd']:.2f} | "
                 f"{totals['eager-nograd'] / totals['sdpa-nograd']:.2f} | |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
