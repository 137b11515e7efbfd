"""How far apart two kernels put the same weights, per token, in one dtype: the noise the vLLM canary must let
through; and how far wrong weights land: what it must catch.

vLLM does not run on CPU, so transformers' eager attention stands in for "another implementation" (the engine) and
the canary's own reference (`generation.backends.vllm.reference_tokens`, SDPA attention) scores the engine's greedy
answers exactly as in the product. "Wrong weights" are the same checkpoint with noise added to the last layer's MLP
(a small scale is a weight update that moves the answers little) or to every weight (a garbled load).

    .venv/bin/python bench/canary_tolerance.py [--prompts 24] [--tokens 32] [--dtypes float32,bfloat16]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.generation import DATA, hh_prompts  # noqa: E402
from bench.report import describe_machine  # noqa: E402
from generation.backends.vllm import (  # noqa: E402
    CANARY_PROMPTS,
    CANARY_TOLERANCE,
    first_canary_difference,
    reference_tokens,
)
from prefcore.chat import prompt_token_ids  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def greedy(model, ids: list[int], tokens: int, eos: int) -> tuple[list[int], list[float]]:
    out, logps, past, x = [], [], None, torch.tensor([ids])
    with torch.inference_mode():
        for _ in range(tokens):
            o = model(input_ids=x, past_key_values=past, use_cache=True)
            past = o.past_key_values
            row = o.logits[0, -1].float().log_softmax(-1)
            t = int(row.argmax())
            out.append(t)
            logps.append(float(row[t]))
            if t == eos:
                break
            x = torch.tensor([[t]])
    return out, logps


def perturbed(model, scale: float, everywhere: bool):
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    params = model.parameters() if everywhere else model.model.layers[-1].mlp.parameters()
    with torch.no_grad():
        for p in params:
            p.add_((torch.randn(p.shape, generator=gen) * scale).to(p.dtype))
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a machine shared with others)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    prompts = list(CANARY_PROMPTS) + hh_prompts(DATA, args.prompts)
    prompt_ids = [prompt_token_ids(tok, p) for p in prompts]
    print(f"machine: {describe_machine()}; model {Path(args.model).name}; {len(prompts)} prompts x up to {args.tokens} "
          f"greedy tokens")
    print("| dtype | engine weights | tokens | max abs log-prob diff | max gap to reference's best | "
          "best-token disagreements | canary (tolerance) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        eager = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="eager").eval()
        cases = [("same, other kernel", eager), ("last MLP + noise 0.002", perturbed(eager, 0.002, False)),
                 ("last MLP + noise 0.01", perturbed(eager, 0.01, False)),
                 ("all weights + noise 0.05", perturbed(eager, 0.05, True))]
        for label, engine in cases:
            answers, logps = zip(*(greedy(engine, ids, args.tokens, tok.eos_token_id) for ids in prompt_ids),
                                 strict=True)
            ref = reference_tokens(args.model, prompt_ids, list(answers), dtype=dtype)
            diff = max(abs(lp - r.logp) for row, rrow in zip(logps, ref, strict=True)
                       for lp, r in zip(row, rrow, strict=True))
            gap = max(r.best_logp - r.logp for rrow in ref for r in rrow)
            disagree = sum(r.best != t for a, rrow in zip(answers, ref, strict=True)
                           for t, r in zip(a, rrow, strict=True))
            tolerance = CANARY_TOLERANCE[name]
            found, _ = first_canary_difference(list(answers), list(logps), ref, tolerance)
            n = sum(map(len, answers))
            print(f"| {name} | {label} | {n} | {diff:.4f} | {gap:.4f} | {disagree} | "
                  f"{'passes' if found is None else 'fails'} ({tolerance}) |", flush=True)


if __name__ == "__main__":
    main()
