"""Command line: `python -m training.dpo.train --model DIR --data FILE.jsonl --out DIR [options]`.

Prints each optimiser step's metrics as a JSON line, a progress bar on stderr, and, as the last stdout line, one
JSON summary (pairs, loss, pairs_per_s, peak_rss_mb, ...). Bad input exits non-zero with one clear line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from training.dpo.config import LOSS_TYPES, DPOConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.dpo.train", description="Train a policy with DPO.")
    parser.add_argument("--model", required=True, help="starting model (and default reference) directory")
    parser.add_argument("--data", required=True, help="JSONL of TRL rows: prompt, chosen, rejected")
    parser.add_argument("--out", required=True, help="directory for the checkpoint or LoRA adapter")
    parser.add_argument("--reference", default=None, help="reference model directory (default: --model)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss", choices=LOSS_TYPES, default="sigmoid")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--rpo-alpha", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--sft-warmup-epochs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = DPOConfig(
            beta=args.beta, loss_type=args.loss, label_smoothing=args.label_smoothing, rpo_alpha=args.rpo_alpha,
            batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs, learning_rate=args.lr,
            max_length=args.max_length, max_prompt_length=min(args.max_prompt_length, args.max_length - 1),
            lora=args.lora, dtype=args.dtype, sft_warmup_epochs=args.sft_warmup_epochs, seed=args.seed,
        )
        from training.dpo.data import load_pairs_jsonl

        pairs = load_pairs_jsonl(args.data)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from training.dpo.trainer import train_dpo

    bar = tqdm(desc="DPO steps", unit="step", file=sys.stderr, disable=int(os.environ.get("RANK", "0")) != 0)

    def on_step(step: int, total: int, metrics: dict) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracy']:.2f}")
        print(json.dumps({"step": step, "total_steps": total, **metrics}), flush=True)

    try:
        result = train_dpo(config, args.model, pairs, args.out, reference_dir=args.reference, on_step=on_step)
    except (ValueError, OSError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch only the main process reports
        return 0
    summary = {
        "pairs": result.pairs, "loss": result.mean_loss, "pairs_per_s": result.pairs_per_s,
        "peak_rss_mb": result.peak_rss_mb, "steps": result.steps, "seconds": result.seconds,
        "truncated": result.truncated, "dropped": result.dropped, "out": str(args.out),
        "final_metrics": result.final_metrics,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
