"""The sampler's numerics per dtype on this machine, for docs/numerics.md: how far its log-probs are from a
teacher-forced forward pass (per token and per sample, for the slots and generic engines, with the share of the
derived bound b_t = 4uZ_t they use), how often the two engines draw the same sample from the same seeds, and how
often a prompt's samples are the same alone as in its batch (at the sampling temperature, and greedy).

    .venv/bin/python bench/numerics.py [--model DIR] [--prompts 128] [--samples 2] [--max-new-tokens 48]
                                       [--alone 24] [--dtypes float32,bfloat16]

Prints one table per dtype, headed by the CPU model and the dtype.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import describe_machine  # noqa: E402
from generation.backends import SamplingConfig, load_backend  # noqa: E402
from generation.backends.rounding import token_logp_bounds  # noqa: E402
from prefcore.chat import prompt_token_ids  # noqa: E402
from prefcore.hardware import describe_dtype  # noqa: E402

DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
PROMPTS = ROOT / "bench" / "data" / "train_prompts.jsonl"


def prompts(count: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    return rows[:count]


def teacher_forced(model, prompt_ids: list[int], tokens: list[int]):
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + tokens])).logits[0].float()
    rows = logits[len(prompt_ids) - 1:len(prompt_ids) - 1 + len(tokens)]
    return rows.log_softmax(-1).gather(1, torch.tensor(tokens)[:, None])[:, 0], rows


def logp_errors(backend, texts, out) -> dict:
    """Per-token and per-sample log-prob error against teacher forcing, and the largest |error| / b_t of any token."""
    import torch

    per_token, per_sample, of_bound = [], [], []
    for text, row in zip(texts, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, text)
        for s in row:
            expected, logits = teacher_forced(backend.model, ids, s.token_ids)
            diff = (torch.tensor(s.extra["token_logps"]) - expected).abs()
            per_token += diff.tolist()
            per_sample.append(abs(s.logp_sum - float(expected.double().sum())) / len(s.token_ids))
            of_bound.append(float((diff / token_logp_bounds(logits, backend.dtype)).max()))
    return {"token_mean": statistics.fmean(per_token), "token_max": max(per_token),
            "sample_mean": statistics.fmean(per_sample), "sample_max": max(per_sample), "of_bound_max": max(of_bound)}


def same(a, b) -> float:
    pairs = [(x.token_ids, y.token_ids) for r, q in zip(a, b, strict=True) for x, y in zip(r, q, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)


def measure(args, dtype: str) -> dict:
    texts = prompts(args.prompts)
    seeds = list(range(len(texts)))
    config = SamplingConfig(n=args.samples, max_new_tokens=args.max_new_tokens, seed=0)  # temperature 0.8, top-p 0.95
    greedy = SamplingConfig(n=1, temperature=0, max_new_tokens=args.max_new_tokens)
    result: dict = {"dtype": dtype, "engines": {}}
    outs = {}
    for engine in ("slots", "generic"):
        backend = load_backend(str(args.model), kind="hf", device="cpu", engine=engine, dtype=dtype)
        start = time.perf_counter()
        out = backend.generate(texts, config, seeds=seeds)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for row in out for s in row)
        row = {"samples": sum(map(len, out)), "tokens": tokens, "tokens_per_s": tokens / seconds}
        print(f"  {dtype} {engine}: sampled {tokens} tokens in {seconds:.0f} s", file=sys.stderr, flush=True)
        row.update(logp_errors(backend, texts, out))
        few = texts[:args.alone]
        crowd = [r[:args.samples] for r in out[:args.alone]]
        alone = [backend.generate([t], config, seeds=[k])[0] for k, t in enumerate(few)]
        row["alone_same"] = same(alone, crowd)
        greedy_crowd = backend.generate(few, greedy, seeds=seeds[:args.alone])
        greedy_alone = [backend.generate([t], greedy, seeds=[k])[0] for k, t in enumerate(few)]
        row["greedy_alone_same"] = same(greedy_alone, greedy_crowd)
        outs[engine] = (out, greedy_crowd)
        result["engines"][engine] = row
        print(f"  {dtype} {engine}: {json.dumps(row)}", file=sys.stderr, flush=True)
    result["engines_same"] = same(outs["slots"][0], outs["generic"][0])
    result["engines_same_greedy"] = same(outs["slots"][1], outs["generic"][1])
    return result


def table(r: dict, args) -> str:
    lines = [f"dtype: {describe_dtype(r['dtype'], 'cpu', setting='--dtype')}",
             f"| engine | samples | log-prob error per token, mean / max | per sample / token, mean / max "
             f"| largest error / bound 4uZ_t | same sample alone as in its batch (T=0.8 / greedy, {args.alone} prompts) "
             f"| tokens/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, e in r["engines"].items():
        lines.append(f"| {name} | {e['samples']} | {e['token_mean']:.2e} / {e['token_max']:.2e} "
                     f"| {e['sample_mean']:.2e} / {e['sample_max']:.2e} | {e['of_bound_max']:.1%} "
                     f"| {e['alone_same']:.1%} / {e['greedy_alone_same']:.1%} | {e['tokens_per_s']:.0f} |")
    lines.append(f"engines draw the same sample from the same seeds: {r['engines_same']:.1%} at T=0.8, top-p 0.95; "
                 f"{r['engines_same_greedy']:.1%} greedy ({args.alone} prompts)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--alone", type=int, default=24, help="prompts also sampled alone (batch invariance)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    print(f"Sampler numerics: {args.model.name}, {args.prompts} prompts x {args.samples} samples, "
          f"up to {args.max_new_tokens} tokens, temperature 0.8, top-p 0.95")
    print(f"CPU: {describe_machine()}")
    for dtype in args.dtypes.split(","):
        print()
        print(table(measure(args, dtype), args), flush=True)


if __name__ == "__main__":
    main()
