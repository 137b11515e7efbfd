"""DPO training speed, whole process and in-process: PrefLoop's training command line against TRL's DPOTrainer.

    .venv/bin/python bench/dpo_throughput.py [--model DIR] [--pairs 32] [--batch-size 4] [--max-length 512]
                                             [--dtype auto|float32|bfloat16] [--repeats 2] [--write-doc]

Each run is a fresh process, timed from its start to its exit (whole process: interpreter, imports, load,
tokenize, reference log-probs, one epoch, save) and from inside after its imports (in-process); its peak RSS is its
own (wait4). PrefLoop runs as a user would run it, `python -m training.dpo.train`; TRL runs a minimal script at its
best settings for this machine: precomputed reference log-probs and, where the CPU computes bf16 natively, bf16
(`--dtype`, "auto" resolving as in prefcore.hardware for both). The two run interleaved (TRL, PrefLoop, TRL, ...)
`--repeats` times on the same pairs and settings; the table gives medians, headed by the CPU model and the dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_ours(args) -> dict:
    from training.dpo.config import DPOConfig
    from training.dpo.data import load_pairs_jsonl
    from training.dpo.trainer import train_dpo

    pairs = load_pairs_jsonl(args.data)[: args.pairs]
    # as the training command line does (training.dpo.train.config_from_args): a --max-length at or below the
    # default prompt length keeps room for an answer, where DPOConfig would refuse it
    config = DPOConfig(batch_size=args.batch_size, max_length=args.max_length, epochs=1, learning_rate=5e-6,
                       dtype=args.dtype, max_prompt_length=min(DPOConfig().max_prompt_length, args.max_length - 1))
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
    from prefcore.hardware import default_device, resolve_dtype
    from training.dpo.config import DPOConfig as DPOConfig_ours
    from training.dpo.data import length_grouped_batches, load_pairs_jsonl, tokenize_pair

    pairs = load_pairs_jsonl(args.data)[: args.pairs]
    # TRL at its best for the machine: the batches PrefLoop trains on (pairs grouped by length, the batches in the
    # same seeded order), read in order; TRL's default random order padded its batches to about 1.6 times the tokens
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    ours = DPOConfig_ours(max_length=args.max_length,
                          max_prompt_length=min(DPOConfig_ours().max_prompt_length, args.max_length - 1))
    lengths = [tokenize_pair(tokenizer, p, ours.max_length, ours.max_prompt_length).length for p in pairs]
    pairs = [pairs[i] for batch in length_grouped_batches(lengths, args.batch_size, seed=0) for i in batch]
    rows = [
        {
            "prompt": to_messages(p.prompt),
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    dtype = resolve_dtype(args.dtype, default_device())  # where both runs train: CUDA when there is one
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        # read into memory, as PrefLoop's trainer reads the model it trains: mapped from the file, the optimiser's
        # first step paid a page fault for every page of the weights (2.3 s on an AMX Xeon)
        model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32, disable_mmap=True,
                                                     attn_implementation=args.trl_attention)
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            max_length=args.max_length, learning_rate=5e-6, beta=0.1, lr_scheduler_type="cosine", warmup_steps=0.1,
            precompute_ref_log_probs=True, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
            use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0, disable_tqdm=True,
            # TRL 1.16 turns gradient checkpointing on by default: it recomputes every layer's forward in backward to
            # save memory a 135M model does not need (PrefLoop's trainer keeps activations); off is TRL's best here
            gradient_checkpointing=False, train_sampling_strategy="sequential",  # the length-grouped order above
        )
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        output = trainer.train()
        trainer.save_model(str(Path(out) / "model"))
        seconds = time.perf_counter() - start
    return {"pairs": len(rows), "seconds": seconds, "loss": output.training_loss, "steps": output.global_step}


def child(args) -> None:
    result = run_ours(args) if args.run == "ours" else run_trl(args)
    print("RESULT " + json.dumps(result), flush=True)


def command(which: str, args, data: Path, out: Path) -> list[str]:
    """The process of one run: the training CLI for PrefLoop, this file in child mode for TRL (or PrefLoop's
    in-process engine, `--run ours`)."""
    if which == "cli":
        return [sys.executable, "-m", "training.dpo.train", "--model", str(args.model), "--data", str(data),
                "--out", str(out), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                "--epochs", "1", "--lr", "5e-6", "--dtype", args.dtype]
    return [sys.executable, __file__, "--run", which, "--trl-attention", args.trl_attention, "--model", str(args.model),
            "--data", str(data),
            "--pairs", str(args.pairs), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
            "--dtype", args.dtype]


def spawn(which: str, args, data: Path) -> dict:
    """Run one process; returns its whole-process seconds, in-process seconds, peak RSS and mean loss."""
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        stdout, stderr = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(stdout, "w") as out_f, open(stderr, "w") as err_f:
            start = time.perf_counter()
            proc = subprocess.Popen(command(which, args, data, Path(tmp) / "model"), stdout=out_f, stderr=err_f,
                                    cwd=ROOT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        lines = stdout.read_text().splitlines()
        if proc.returncode != 0:
            sys.stderr.write("\n".join(lines[-20:]) + stderr.read_text()[-3000:])
            raise SystemExit(f"the {which} run failed (exit {proc.returncode})")
    if which == "cli":
        summary = json.loads(lines[-1])
        result = {"pairs": summary["pairs"], "seconds": summary["seconds"], "loss": summary["loss"],
                  "steps": summary["steps"]}
    else:
        result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    result.update(whole_seconds=wall, cpu_seconds=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)
    return result


def main() -> None:
    from bench.report import add_training_arguments, ensure_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of every run; medians reported")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run (0: torch's default)")
    parser.add_argument("--trl-attention", choices=["sdpa", "eager"], default="sdpa",
                        help="TRL's attention (transformers' default: sdpa); see docs/performance.md for which is "
                             "TRL's faster on a CPU")
    parser.add_argument("--run", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--order", default="trl,cli",
                        help="which runs, in order: trl, cli (the training command line), ours (in-process only)")
    parser.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()
    if args.run:
        return child(args)
    ensure_model(args.model)

    from bench.report import machine_line, median, write_section
    from prefcore.hardware import default_device, describe_dtype
    from training.dpo.data import load_pairs_jsonl

    available = len(load_pairs_jsonl(args.data))  # a bad file fails here, with its line, before any run
    names = {"trl": "TRL 1.16 DPOTrainer (precomputed reference)", "cli": "PrefLoop `python -m training.dpo.train`",
             "ours": "PrefLoop train_dpo (in-process only)"}
    order = args.order.split(",")
    runs: dict[str, list[dict]] = {which: [] for which in order}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"  # the first --pairs rows: the CLI trains on a whole file
        with open(args.data) as f:
            data.write_text("".join(line for _, line in zip(range(args.pairs), f, strict=False)))
        for r in range(args.repeats):
            for which in order:
                print(f"round {r + 1}: running {which} ...", file=sys.stderr, flush=True)
                result = spawn(which, args, data if which == "cli" else args.data)
                runs[which].append(result)
                print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)

    def med(which: str, key: str) -> float:
        return median([r[key] for r in runs[which] if r.get(key) is not None])

    dtype = describe_dtype(args.dtype, default_device(), setting="--dtype")
    # the pairs each run says it trained on, not --pairs: a file of fewer rows gives fewer, and a rate of --pairs
    # over its time would overstate it
    trained = sorted({int(r["pairs"]) for which in order for r in runs[which]})
    count = (f"{trained[0]} HH-RLHF pairs" if len(trained) == 1
             else f"{'/'.join(map(str, trained))} HH-RLHF pairs (the runs differ)")
    if min(trained) < args.pairs:
        count += f" (--pairs {args.pairs}; the file has {available})"
    lines = [f"{args.model.name}, {count}, batch {args.batch_size}, max length {args.max_length}, "
             f"1 epoch, lr 5e-6, dtype {dtype}; {args.repeats} interleaved repeats, medians; "
             f"{f'OMP_NUM_THREADS={args.threads} in every run' if args.threads else 'torch default threads'}.", "",
             f"Machine: {machine_line()}.", "",
             "CPU seconds (user + system, the whole process) are what holds on a shared machine; wall time there "
             "depends on what else ran at the moment.", "",
             "| run | whole process s | whole process CPU s | in-process s (after imports) | pairs/s in-process |"
             " peak RSS MB | mean loss | all whole-process s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for which in order:
        whole = [r["whole_seconds"] for r in runs[which]]
        lines.append(f"| {names[which]} | {med(which, 'whole_seconds'):.1f} | {med(which, 'cpu_seconds'):.1f} | "
                     f"{med(which, 'seconds'):.1f} | "
                     f"{med(which, 'pairs') / med(which, 'seconds'):.3f} | {med(which, 'peak_rss_mb'):.0f} | "
                     f"{med(which, 'loss'):.4f} | {', '.join(f'{w:.1f}' for w in whole)} |")
    ours = "cli" if "cli" in runs else "ours" if "ours" in runs else None
    if ours and "trl" in runs:
        def ratio(key: str) -> str:
            """The median of the rounds' own ratios (TRL's time over ours, run side by side in one round), with each
            round's: the ratio of the two medians can pair one round's TRL with another round's PrefLoop."""
            each = [t[key] / o[key] for t, o in zip(runs["trl"], runs[ours], strict=True)]
            return f"{median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})"

        whole = (f"whole process {ratio('whole_seconds')} TRL in wall time, {ratio('cpu_seconds')} in CPU time, "
                 if ours == "cli" else "")
        lines += ["", f"PrefLoop, the median of each round's ratio (each round's in brackets): {whole}in-process "
                  f"{ratio('seconds')} TRL; mean loss differs by {abs(med(ours, 'loss') - med('trl', 'loss')):.4f}; "
                  f"peak RSS {med(ours, 'peak_rss_mb') / med('trl', 'peak_rss_mb'):.2f}x TRL's."]
    table = "\n".join(lines)
    print(table)
    if args.write_doc:
        cmd = "bench/dpo_throughput.py " + " ".join(a for a in sys.argv[1:] if a != "--write-doc")
        print(f"written to {write_section('DPO training', f'`.venv/bin/python {cmd.strip()}`' + chr(10) * 2 + table)}")


if __name__ == "__main__":
    main()
