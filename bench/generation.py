"""Sampling speed, side by side in one process on the same prompts and settings: PrefLoop's CPU sampler (`hf`
backend) against transformers `generate` (static batches) and transformers' continuous batching `generate_batch`,
each in its best dtype for this machine; with --vllm, vLLM on a GPU.

    .venv/bin/python bench/generation.py [--prompts 64] [--max-new-tokens 128] [--repeats 3] [--write-doc]

Every engine first runs one untimed round at full size (the same prompts and settings as the timed ones: threads,
allocator, kernels' first calls, generate_batch's CUDA graphs on a GPU), so none is timed cold. Then the engines run
interleaved (A B C, A B C, ...) `--repeats` times and the table gives each one's median, so load from other work on
a shared machine falls on all alike. vLLM (--vllm) runs its warm-up and repeats after the others, not interleaved
with them: its engine takes most of the GPU's memory, so it is started only once the others are done with it; its
dtype is the one its engine loaded. Tokens/s count generated tokens up to and including each sample's EOS (what a
user keeps), not padding. "Best dtype" is `prefcore.hardware.fastest_dtype` (bf16 with AMX or AVX-512 BF16, fp32
on AVX2); `--hf-dtypes float32,bfloat16` measures transformers in both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generation.backends.base import SamplingConfig  # noqa: E402
from prefcore.chat import prompt_token_ids  # noqa: E402

DATA = ROOT / "data" / "hh-rlhf-sample.jsonl"


def hh_prompts(path: Path, count: int) -> list[str]:
    """First human turns of the HH-RLHF sample (distinct, in file order)."""
    prompts: list[str] = []
    with open(path) as f:
        for line in f:
            text = json.loads(line)["chosen"]
            turn = text.split("\n\nHuman: ", 1)[-1].split("\n\nAssistant:", 1)[0].strip()
            if turn and turn not in prompts:
                prompts.append(turn)
    while len(prompts) < count:  # a small file: repeat it (the sampler does not cache across prompts)
        prompts += prompts[: count - len(prompts)]
    return prompts[:count]


def useful_tokens(rows, eos_ids: set[int]) -> int:
    total = 0
    for row in rows:
        cut = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        total += cut
    return total


def plain_generate(model, tokenizer, prompts, config: SamplingConfig, batch: int) -> tuple[int, float]:
    """transformers `generate` over left-padded batches; returns (useful tokens, seconds)."""
    import torch

    eos = {tokenizer.eos_token_id}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    tokens, start = 0, time.perf_counter()
    torch.manual_seed(config.seed)
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        width = max(map(len, chunk))
        inp = torch.full((len(chunk), width), pad)
        att = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, row in enumerate(chunk):
            inp[r, width - len(row):] = torch.tensor(row)
            att[r, width - len(row):] = 1
        with torch.inference_mode():
            out = model.generate(
                input_ids=inp.to(model.device), attention_mask=att.to(model.device), do_sample=True,
                temperature=config.temperature, top_p=config.top_p, top_k=0, max_new_tokens=config.max_new_tokens,
                num_return_sequences=config.n, pad_token_id=pad,
            )
        tokens += useful_tokens(out[:, width:].tolist(), eos)
    return tokens, time.perf_counter() - start


def continuous_generate(model, tokenizer, prompts, config: SamplingConfig, *, warmup: bool = False) -> tuple[int, float]:
    """transformers' continuous batching (`model.generate_batch`, paged KV cache, up to config.batch_size requests
    per step); returns (useful tokens, seconds). `warmup` is generate_batch's own (CUDA-graph capture on a GPU), asked
    for in the benchmark's untimed warm-up round only."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    eos = {tokenizer.eos_token_id}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    page = 256
    per_request = -(-(max(map(len, ids)) + config.max_new_tokens) // page)
    gen = GenerationConfig(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0,
                           max_new_tokens=config.max_new_tokens, num_return_sequences=config.n,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
    # On a GPU these are inferred from free GPU memory; on a CPU they must be given: room for every request at once
    # (so nothing is evicted), at most batch_size requests per step, prefill chunks of 1024 tokens.
    cb = ContinuousBatchingConfig(page_size=page, num_blocks=len(ids) * config.n * per_request + 4,
                                  max_requests_per_batch=config.batch_size, max_batch_tokens=1024, seed=config.seed)
    start = time.perf_counter()
    out = model.generate_batch(ids, generation_config=gen, continuous_batching_config=cb, warmup=warmup)
    seconds = time.perf_counter() - start
    if len(out) != len(ids) * config.n or any(r.error for r in out.values()):
        raise RuntimeError(f"generate_batch returned {len(out)} of {len(ids) * config.n} requests "
                           f"({sum(bool(r.error) for r in out.values())} failed)")
    return useful_tokens([r.generated_tokens for r in out.values()], eos), seconds


def run_backend(backend, prompts, config: SamplingConfig) -> tuple[int, float]:
    start = time.perf_counter()
    out = backend.generate(prompts, config)
    seconds = time.perf_counter() - start
    return sum(len(s.token_ids) for row in out for s in row), seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1, help="samples per prompt (K)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every engine; medians are reported")
    ap.add_argument("--hf-dtypes", default="auto",
                    help="comma-separated dtypes for transformers' engines (auto: this machine's fastest)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="the sampler's dtype")
    ap.add_argument("--skip-generate-batch", action="store_true", help="leave out transformers' generate_batch")
    ap.add_argument("--skip-plain", action="store_true", help="leave out transformers' engines altogether")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="where every engine runs (default: the CPU, or CUDA with --vllm)")
    ap.add_argument("--vllm", action="store_true", help="also run the vLLM backend (needs a GPU and vllm)")
    ap.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.report import describe_machine, machine_line, median, write_section
    from generation.backends import load_backend
    from generation.bootstrap import bootstrap_checkpoint
    from prefcore.hardware import describe_dtype, dtype_name, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = str(bootstrap_checkpoint(args.model))
    prompts = hh_prompts(DATA, args.prompts)
    config = SamplingConfig(n=args.samples, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens,
                            seed=0, batch_size=args.batch_size)
    device = args.device or ("cuda" if torch.cuda.is_available() and args.vllm else "cpu")
    settings = (f"{Path(model_dir).name}, {len(prompts)} prompts x {config.n} samples, batch {config.batch_size}, "
                f"temperature {config.temperature}, top-p {config.top_p}, {config.max_new_tokens} new tokens")
    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"sampler dtype: {describe_dtype(args.dtype, device, setting='--dtype')}")
    print(settings, flush=True)

    engines: dict[str, tuple[str, object]] = {}  # name -> (dtype, run() -> (tokens, seconds))
    warm_ups: dict[str, object] = {}  # name -> its untimed full-size round, where it differs from run()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if not args.skip_plain:
        for choice in dict.fromkeys(resolve_dtype(d.strip(), device) for d in args.hf_dtypes.split(",")):
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=choice).to(device).eval()
            name = dtype_name(choice)
            engines[f"transformers generate (static batches of {config.batch_size})"
                    + ("" if len(args.hf_dtypes.split(",")) == 1 else f", {name}")] = (
                name, lambda m=model: plain_generate(m, tok, prompts, config, max(1, config.batch_size // config.n)))
            if not args.skip_generate_batch:
                batched = ("transformers generate_batch (continuous batching)"
                           + ("" if len(args.hf_dtypes.split(",")) == 1 else f", {name}"))
                engines[batched] = (name, lambda m=model: continuous_generate(m, tok, prompts, config))
                warm_ups[batched] = lambda m=model: continuous_generate(m, tok, prompts, config, warmup=True)
    hf = load_backend(model_dir, kind="hf", device=device, dtype=args.dtype)
    ours = f"PrefLoop sampler ({hf.engine} engine)"
    engines[ours] = (dtype_name(hf.dtype), lambda: run_backend(hf, prompts, config))

    # One untimed round of each at full size before any timing. Before, generate_batch and ours were warmed on 2
    # prompts x 4 tokens and transformers generate not at all, so its first timed round paid for first calls
    # (allocator growth, kernels for the full batch's shapes) that the others had made beforehand.
    for name, (dtype, fn) in engines.items():
        start = time.perf_counter()
        n, _ = warm_ups.get(name, fn)()
        print(f"  warm-up: {name:<56} {dtype:<9} {n:>6} tok {time.perf_counter() - start:>7.1f} s (untimed)",
              flush=True)

    rates: dict[str, list[float]] = {name: [] for name in engines}
    cpu_rates: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    for r in range(args.repeats):
        for name, (dtype, fn) in engines.items():
            cpu = time.process_time()  # every thread of this process, generate_batch's worker thread included
            n, seconds = fn()
            cpu = time.process_time() - cpu
            rates[name].append(n / seconds)
            cpu_rates[name].append(n / cpu)
            tokens[name].append(n)
            print(f"  round {r + 1}: {name:<58} {dtype:<9} {n:>6} tok {seconds:>7.1f} s {n / seconds:>8.1f} tok/s "
                  f"{n / cpu:>8.1f} tok/CPU-s", flush=True)
    hf.close()
    if args.vllm:
        vl = load_backend(model_dir, kind="vllm")
        run_backend(vl, prompts, config)  # the same untimed full-size round as every other engine
        for _ in range(args.repeats):
            n, seconds = run_backend(vl, prompts, config)
            rates.setdefault("vLLM", []).append(n / seconds)
            cpu_rates.setdefault("vLLM", []).append(float("nan"))
            tokens.setdefault("vLLM", []).append(n)
        engines["vLLM"] = (dtype_name(vl.engine_dtype), None)  # what the engine loaded, not what was asked
        vl.close()

    threads = torch.get_num_threads()
    lines = [f"{settings}; {args.repeats} interleaved repeats, medians; {threads} torch thread(s).", "",
             f"Machine: {machine_line()}.", "",
             "Tokens per CPU-second (process CPU time, all threads) is the figure that holds on a shared machine: "
             "wall time there depends on what else ran at the moment.", "",
             "| engine | dtype | tokens (median) | tokens/s wall (median) | tokens per CPU-s (median) | "
             "PrefLoop x this, wall (each round) | PrefLoop x this, CPU (each round) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]

    def ratio(ours_rates: list[float], theirs: list[float]) -> str:
        """The median of the rounds' own ratios (each round runs every engine side by side), with each round's: the
        ratio of two medians could pair one round's engine with another round's sampler."""
        each = [o / t for o, t in zip(ours_rates, theirs, strict=True)]
        return f"{median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})"

    for name, (dtype, _) in engines.items():
        rate, cpu_rate = median(rates[name]), median(cpu_rates[name])
        lines.append(f"| {name} | {dtype} | {median(tokens[name]):.0f} | {rate:.1f} | {cpu_rate:.1f} | "
                     f"{ratio(rates[ours], rates[name])} | {ratio(cpu_rates[ours], cpu_rates[name])} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.write_doc:
        cmd = "bench/generation.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-doc")
        print(f"written to {write_section('Sampling', f'`.venv/bin/python {cmd.strip()}`' + chr(10) * 2 + table)}")


if __name__ == "__main__":
    main()
