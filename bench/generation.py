"""Sampling speed, side by side in one process on the same prompts and settings: plain transformers `generate`
(batch 1 and batch 32, fp32) against the project's CPU sampler (`hf` backend); with --vllm, vLLM on a GPU.

    .venv/bin/python bench/generation.py [--prompts 64] [--max-new-tokens 128] [--vllm]

Tokens/s count generated tokens up to and including each sample's EOS (what a user keeps), not padding.
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


def run_backend(backend, prompts, config: SamplingConfig) -> tuple[int, float, float]:
    """(tokens, seconds, share of samples that stopped on EOS)."""
    start = time.perf_counter()
    out = backend.generate(prompts, config)
    seconds = time.perf_counter() - start
    samples = [s for row in out for s in row]
    return sum(len(s.token_ids) for s in samples), seconds, sum(s.finish_reason == "stop" for s in samples) / len(samples)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch1-prompts", type=int, default=4, help="prompts for the slow batch-1 baseline")
    ap.add_argument("--samples", type=int, default=1, help="samples per prompt (K)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--extra-batch", type=int, nargs="*", default=[], help="also run our sampler at these batch sizes")
    ap.add_argument("--skip-plain", action="store_true", help="skip transformers generate")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for every row (0: torch's default); 1 is steadier on a shared machine")
    ap.add_argument("--vllm", action="store_true", help="also run the vLLM backend (needs a GPU and vllm)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="the hf sampler's dtype (transformers generate runs in fp32)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generation.backends import load_backend
    from generation.bootstrap import bootstrap_checkpoint
    from prefcore.hardware import describe, describe_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = str(bootstrap_checkpoint(args.model))
    prompts = hh_prompts(DATA, args.prompts)
    config = SamplingConfig(n=args.samples, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens,
                            seed=0, batch_size=args.batch_size)
    device = "cuda" if torch.cuda.is_available() and args.vllm else "cpu"
    rows: list[tuple[str, int, float, str]] = []

    def report(name: str, tokens: int, seconds: float, note: str = "") -> None:
        rows.append((name, tokens, seconds, note))
        print(f"  {name:<44} {tokens:>6} tok {seconds:>8.1f} s {tokens / seconds:>9.1f} tok/s {note}", flush=True)

    sampler_dtype = describe_dtype(args.dtype, device, setting="--dtype")
    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}")
    print(f"dtype: prefloop hf sampler {sampler_dtype}; transformers generate float32")
    print(f"model: {model_dir}; {len(prompts)} prompts x {config.n} samples, temperature {config.temperature}, "
          f"top_p {config.top_p}, max_new_tokens {config.max_new_tokens}", flush=True)
    if not args.skip_plain:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        few = prompts[: args.batch1_prompts]
        report(f"transformers generate, batch 1, fp32 ({len(few)} prompts)",
               *plain_generate(model, tok, few, config, 1))
        report(f"transformers generate, batch {args.batch_size}, fp32",
               *plain_generate(model, tok, prompts, config, max(1, args.batch_size // config.n)))
        del model
    hf = load_backend(model_dir, kind="hf", device=device, dtype=args.dtype)
    hf.generate(prompts[:2], SamplingConfig(n=1, max_new_tokens=4, batch_size=2))  # warm-up: threads, allocator
    tokens, seconds, stopped = run_backend(hf, prompts, config)
    report(f"prefloop hf sampler, batch {args.batch_size}, {str(hf.dtype).replace('torch.', '')}", tokens, seconds,
           f"({stopped:.0%} stopped on EOS)")
    for extra in args.extra_batch:
        cfg = SamplingConfig.from_dict(dict(config.to_dict(), batch_size=extra))
        tokens, seconds, stopped = run_backend(hf, prompts, cfg)
        report(f"prefloop hf sampler, batch {extra}, {str(hf.dtype).replace('torch.', '')}", tokens, seconds)
    hf.close()
    if args.vllm:
        vl = load_backend(model_dir, kind="vllm")
        vl.generate(prompts[:2], SamplingConfig(n=1, max_new_tokens=4))
        tokens, seconds, _ = run_backend(vl, prompts, config)
        report("vLLM", tokens, seconds)
        vl.close()

    base = {name: t / s for name, t, s, _ in rows}
    print("\n| sampler | tokens | seconds | tokens/s | x generate batch 1 | x generate batched |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    b1 = next((v for k, v in base.items() if "batch 1," in k), None)
    bn = next((v for k, v in base.items() if k.startswith("transformers") and "batch 1," not in k), None)
    for name, tokens, seconds, _ in rows:
        rate = tokens / seconds
        r1 = f"{rate / b1:.1f}x" if b1 else "-"
        rn = f"{rate / bn:.1f}x" if bn else "-"
        print(f"| {name} | {tokens} | {seconds:.1f} | {rate:.1f} | {r1} | {rn} |")
    print(f"\n{describe()}; hf sampler {sampler_dtype}; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
