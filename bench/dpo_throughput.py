"""DPO training throughput: PrefLoop's engine against TRL's DPOTrainer, one after the other in fresh processes.

    .venv/bin/python bench/dpo_throughput.py [--model DIR] [--pairs 32] [--batch-size 4] [--max-length 512]
                                             [--dtype auto|float32|bfloat16]

Each run is a subprocess (so peak RSS is its own) that times everything after imports: load, tokenize, reference
log-probs, one epoch of training, save. Both run in the same dtype: --dtype, "auto" being bf16 only where this
machine computes bf16 natively (prefcore.hardware), else fp32; TRL otherwise at its fastest CPU settings
(precomputed reference log-probs). Prints one table, headed by the CPU model and the dtype.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
DEFAULT_DATA = ROOT / "data" / "hh-rlhf-sample.jsonl"


def run_ours(args) -> dict:
    from training.dpo.config import DPOConfig
    from training.dpo.data import load_pairs_jsonl
    from training.dpo.trainer import train_dpo

    pairs = load_pairs_jsonl(args.data)[: args.pairs]
    config = DPOConfig(batch_size=args.batch_size, max_length=args.max_length, epochs=1, learning_rate=5e-6,
                       dtype=args.dtype)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train_dpo(config, args.model, pairs, Path(out) / "model")
        seconds = time.perf_counter() - start
    return {"pairs": result.pairs, "seconds": seconds, "loss": result.mean_loss, "steps": result.steps}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefcore.chat import to_messages
    from prefcore.hardware import resolve_dtype
    from training.dpo.data import load_pairs_jsonl

    pairs = load_pairs_jsonl(args.data)[: args.pairs]
    rows = [
        {
            "prompt": to_messages(p.prompt),
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    bf16 = resolve_dtype(args.dtype, "cpu") == torch.bfloat16
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(args.model))
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            max_length=args.max_length, learning_rate=5e-6, beta=0.1, lr_scheduler_type="cosine", warmup_steps=0.1,
            precompute_ref_log_probs=True, bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to="none",
            save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        output = trainer.train()
        trainer.save_model(str(Path(out) / "model"))
        seconds = time.perf_counter() - start
    return {"pairs": len(rows), "seconds": seconds, "loss": output.training_loss, "steps": output.global_step}


def child(args) -> None:
    import resource

    result = run_ours(args) if args.run == "ours" else run_trl(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["pairs_per_s"] = result["pairs"] / result["seconds"]
    print("RESULT " + json.dumps(result), flush=True)


def spawn(which: str, args) -> dict:
    cmd = [sys.executable, __file__, "--run", which, "--model", str(args.model), "--data", str(args.data),
           "--pairs", str(args.pairs), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
           "--dtype", args.dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    raise SystemExit(f"the {which} run failed (exit {proc.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--run", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--order", default="trl,ours", help="which runs, in order (default trl,ours)")
    args = parser.parse_args()
    if args.run:
        return child(args)
    if not (args.model / "config.json").exists():
        from generation.bootstrap import bootstrap_checkpoint

        bootstrap_checkpoint(args.model)

    from prefcore.hardware import describe, describe_dtype

    results = {}
    for which in args.order.split(","):
        print(f"running {which} ...", file=sys.stderr, flush=True)
        results[which] = spawn(which, args)
    print(f"DPO throughput: {args.model.name}, {args.pairs} pairs, batch {args.batch_size}, "
          f"max length {args.max_length}, 1 epoch")
    print(f"CPU: {describe()}")
    print(f"dtype: {describe_dtype(args.dtype, 'cpu', setting='--dtype')}")
    print(f"{'run':<10}{'wall s':>9}{'pairs/s':>10}{'peak RSS MB':>13}{'mean loss':>11}")
    for which, r in results.items():
        name = "PrefLoop" if which == "ours" else "TRL 1.16"
        print(f"{name:<10}{r['seconds']:>9.1f}{r['pairs_per_s']:>10.3f}{r['peak_rss_mb']:>13.0f}{r['loss']:>11.4f}")
    if "ours" in results and "trl" in results:
        ours, trl = results["ours"], results["trl"]
        print(f"ratio: {ours['pairs_per_s'] / trl['pairs_per_s']:.2f}x pairs/s, "
              f"loss diff {abs(ours['loss'] - trl['loss']):.4f}, "
              f"RSS {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
