"""The sampling stage of a loop round, at the batch and chunk sizes a generation job uses now and used before:
48 of the loop's train prompts x 4 samples (T 0.8, top-p 0.95, 128 new tokens), one sampling call per chunk of
prompts as `generation.services` makes them, on PrefLoop's sampler in the product's dtype.

    .venv/bin/python bench/sampling_batch.py [--prompts 48] [--samples 4] [--repeats 3]

The arms run interleaved (A B C, A B C, ...) `--repeats` times in one process; the table gives each one's median
wall and CPU seconds for the whole stage. Samples drawn at another batch are other draws of the same distribution
in bf16 (their neighbours change the rounding, docs/numerics.md), so the token counts differ a little between arms.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generation.backends.base import SamplingConfig  # noqa: E402

PROMPTS = ROOT / "bench" / "data" / "train_prompts.jsonl"
BEFORE = (32, 16)  # (rows decoded at once, prompts a chunk) until 1 December 2026


def loop_prompts(count: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    if len(rows) < count:
        raise SystemExit(f"{PROMPTS} has {len(rows)} prompts, fewer than --prompts {count}")
    return rows[:count]


def run_stage(backend, prompts: list[str], config: SamplingConfig, chunk: int) -> tuple[int, float, float]:
    """(tokens, wall s, process CPU s) of sampling `prompts` in calls of `chunk` prompts."""
    tokens, wall, cpu = 0, time.perf_counter(), time.process_time()
    for start in range(0, len(prompts), chunk):
        out = backend.generate(prompts[start:start + chunk], config)
        tokens += sum(len(s.token_ids) for row in out for s in row)
    return tokens, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (K)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    # the chunking rule is the generation service's, which needs Django's settings (no database is opened)
    from bench.label_budget import setup

    setup(Path(tempfile.mkdtemp(prefix="sampling-batch-")))

    from bench.report import machine_line, median
    from generation.backends import load_backend
    from generation.bootstrap import bootstrap_checkpoint
    from generation.services import CHUNK_ROWS, chunk_prompts
    from prefcore.hardware import describe_dtype, dtype_name

    prompts = loop_prompts(args.prompts)
    now = SamplingConfig(n=args.samples, temperature=0.8, top_p=0.95, max_new_tokens=128, seed=0)
    arms = {
        f"before: batch {BEFORE[0]}, chunks of {BEFORE[1]} prompts": (
            SamplingConfig.from_dict(dict(now.to_dict(), batch_size=BEFORE[0])), BEFORE[1]),
        f"batch {now.batch_size}, chunks of {BEFORE[1]} prompts": (now, BEFORE[1]),
        f"now: batch {now.batch_size}, chunks of {CHUNK_ROWS} rows ({chunk_prompts(now)} prompts)": (
            now, chunk_prompts(now)),
    }
    backend = load_backend(str(bootstrap_checkpoint(args.model)), kind="hf", device="cpu", dtype="auto")
    for config, chunk in arms.values():  # an untimed full-size round of each arm: no arm's first timed round pays
        run_stage(backend, prompts, config, chunk)  # for first calls, the allocator or a cache grown for it
    print(f"dtype: {describe_dtype('auto', 'cpu')}")
    print(f"{len(prompts)} prompts x {now.n} samples, T {now.temperature}, top-p {now.top_p}, "
          f"{now.max_new_tokens} new tokens; {args.repeats} interleaved repeats, medians", flush=True)
    results: dict[str, list[tuple[int, float, float]]] = {name: [] for name in arms}
    for rep in range(args.repeats):
        for name, (config, chunk) in arms.items():
            tokens, wall, cpu = run_stage(backend, prompts, config, chunk)
            results[name].append((tokens, wall, cpu))
            print(f"repeat {rep + 1}: {name}: {tokens} tokens in {wall:.1f} s ({tokens / wall:.0f} tok/s), "
                  f"CPU {cpu:.0f} s", flush=True)
    before = results[next(iter(arms))]
    lines = ["arm | tokens (median) | stage s (median) | tok/s (median) | CPU s (median) | x before, wall (the median "
             "of each repeat's ratio)", "--- | ---: | ---: | ---: | ---: | ---:"]
    for name, rows in results.items():
        wall = median([w for _, w, _ in rows])
        each = [b[1] / r[1] for b, r in zip(before, rows, strict=True)]  # the repeat's own pair, side by side
        lines.append(f"{name} | {median([t for t, _, _ in rows]):.0f} | {wall:.1f} | "
                     f"{median([t / w for t, w, _ in rows]):.0f} | {median([c for _, _, c in rows]):.0f} | "
                     f"{median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})")
    print(f"\nMachine: {machine_line()}; sampler dtype {dtype_name(backend.dtype)}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
