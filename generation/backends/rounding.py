"""What rounding does to the sampler's numbers: the bounds that the tests and bench/numerics.py check against, with
their derivation (docs/numerics.md has the measured figures).

A dtype with a p-bit significand rounds to nearest with unit roundoff u = 2^-p: bf16 keeps 8 bits (7 stored and
the implicit one), so u = 2^-8; fp32 keeps 24, u = 2^-24. Each logit z_v leaves the lm_head rounded, within u|z_v|
of the value before that rounding. Two computations of the same position's logits (the two engines, a prompt alone
or in a batch, the sampler and a teacher-forced pass) thus differ by at most 2u|z_v| <= 2uZ per logit, Z = max_v |z_v|
the position's logit scale. A token's log-prob z_t - logsumexp(z) moves by the change of z_t plus at most the largest
change of any logit (logsumexp moves no more than its largest argument), so by at most b = 4uZ; a sum over N tokens
by at most sum_t b_t <= 4uNZ, and by about sqrt(N) b when the roundings are independent (as round-to-nearest
errors of different positions are). The bound is first order: it counts the rounding of the logits themselves,
not roundings upstream that reach them through the layers; docs/numerics.md measures how far inside it the tiny
test model and SmolLM2-135M stay.

Greedy decoding picks the argmax: two computations pick the same token wherever the two largest logits are more
than 2 x 2uZ apart, since each logit moves by at most 2uZ. Sampling picks by a uniform against the CDF; a rounding
change moves each CDF boundary a little, so two computations part only where the uniform falls near a boundary
(generation.backends.nucleus walks the CDF in token-id order so that this holds).
"""
from __future__ import annotations

import torch

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u of a floating dtype: half the distance from 1 to the next number (torch.finfo's eps / 2)."""
    return UNIT_ROUNDOFF.get(dtype, torch.finfo(dtype).eps / 2)


def token_logp_bounds(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """logits [N, V] as computed -> [N]: b_t = 4 u Z_t, the most a token's log-prob may differ between two
    computations of those logits in `dtype`."""
    return 4 * unit_roundoff(dtype) * logits.float().abs().amax(dim=-1)


def greedy_is_stable(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """logits [N, V] -> [N] bool: whether the argmax at each position is the same for any two computations of those
    logits in `dtype`, i.e. the two largest logits are more than 4 u Z apart (each may move by 2 u Z)."""
    top = logits.float().topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]) > token_logp_bounds(logits, dtype)
