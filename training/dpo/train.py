"""Command line: `python -m training.dpo.train --model DIR --data FILE.jsonl --out DIR [options]`.

Prints each optimiser step's metrics as a JSON line, a progress bar on stderr, and, as the last stdout line, one
JSON summary (pairs, loss, pairs_per_s, peak_rss_mb, ...). Bad input exits non-zero with one clear line. Cached
reference log-probs in the JSONL (ref_chosen_logp, ref_rejected_logp) are used, not recomputed; `--config` takes a
whole DPOConfig as JSON and `--result` writes the whole TrainResult (with every pair's reference log-probs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from training.dpo.config import LOSS_TYPES, DPOConfig

# the flags that set DPOConfig fields (all of them are replaced by --config)
CONFIG_FLAGS = {
    "beta": "beta", "loss": "loss_type", "label_smoothing": "label_smoothing", "rpo_alpha": "rpo_alpha",
    "batch_size": "batch_size", "grad_accum": "grad_accum", "epochs": "epochs", "lr": "learning_rate",
    "max_length": "max_length", "max_prompt_length": "max_prompt_length", "lora": "lora", "dtype": "dtype",
    "sft_warmup_epochs": "sft_warmup_epochs", "seed": "seed",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.dpo.train", description="Train a policy with DPO.")
    parser.add_argument("--model", required=True, help="starting model (and default reference) directory")
    parser.add_argument("--data", required=True, help="JSONL of TRL rows: prompt, chosen, rejected "
                        "(optional: preference_prob, ref_chosen_logp, ref_rejected_logp)")
    parser.add_argument("--out", required=True, help="directory for the checkpoint or LoRA adapter")
    parser.add_argument("--reference", default=None, help="reference model directory (default: --model)")
    parser.add_argument("--config", default=None, metavar="FILE.json",
                        help="the whole DPOConfig as a JSON object (instead of the training flags below)")
    parser.add_argument("--result", default=None, metavar="FILE.json",
                        help="write the whole result here, with every pair's reference log-probs in input order")
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
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    if args.config is not None:
        probe = _parser()
        for action in probe._actions:
            if action.dest in CONFIG_FLAGS:
                action.default = argparse.SUPPRESS  # so only the flags actually given appear
        given = sorted(set(vars(probe.parse_args(argv))) & set(CONFIG_FLAGS))
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            probe.error(f"--config takes the whole training configuration: do not combine it with {flags}")
    return args


def config_from_args(args: argparse.Namespace) -> DPOConfig:
    """The DPOConfig of the command line: the --config file, or the training flags."""
    if args.config is None:
        return DPOConfig(
            beta=args.beta, loss_type=args.loss, label_smoothing=args.label_smoothing, rpo_alpha=args.rpo_alpha,
            batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs, learning_rate=args.lr,
            max_length=args.max_length, max_prompt_length=min(args.max_prompt_length, args.max_length - 1),
            lora=args.lora, dtype=args.dtype, sft_warmup_epochs=args.sft_warmup_epochs, seed=args.seed,
        )
    path = Path(args.config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    try:
        return DPOConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def check_model_dir(path: str, flag: str) -> None:
    """A clear error for a model folder that cannot be loaded, before any process loads it."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder}: no such directory")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag} {folder}: not a model directory (no config.json)")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _write_json(path: Path, data: dict) -> None:
    """Write, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        check_model_dir(args.model, "--model")
        if args.reference is not None:
            check_model_dir(args.reference, "--reference")
        from training.dpo.data import load_pairs_jsonl

        pairs = load_pairs_jsonl(args.data)
    except (ValueError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from training.dpo.trainer import train_dpo

    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch only the main process reports
    bar = tqdm(desc="DPO steps", unit="step", file=sys.stderr, disable=not main_process)

    def on_step(step: int, total: int, metrics: dict) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracy']:.2f}")
        print(json.dumps({"step": step, "total_steps": total, **metrics}), flush=True)

    try:
        result = train_dpo(config, args.model, pairs, args.out, reference_dir=args.reference, on_step=on_step)
    except (ValueError, OSError) as exc:
        bar.close()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    bar.close()
    if not main_process:
        return 0
    if args.result:
        _write_json(Path(args.result), {**dataclasses.asdict(result), "out": str(args.out)})
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
