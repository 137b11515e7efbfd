"""Temperature and top-p (nucleus) sampling driven by one uniform number per row, so each sample's randomness is
its own seeded stream whatever else shares the batch; also the sampled token's log-prob at temperature 1.

The uniform picks a token by inverse CDF in token-id order (inside the nucleus for top-p), so every token owns one
interval of [0, 1): logits that differ by rounding (bf16, another batch, another engine) move the interval ends by
the probability they move, and a sample changes only when its uniform falls that close to an end (docs/numerics.md).
"""
from __future__ import annotations

import torch

# Candidate counts tried in turn: most nuclei fit in the top 64 tokens, flat ones in 2048; a row that needs more is
# sorted in full (sorting a 49k-token row costs as much as a top-2048 of 8 rows).
CANDIDATES = (64, 2048)


def _pick(z_sorted: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Token ids drawn by inverse CDF inside the nucleus; z_sorted descending, ids the token of each candidate.

    The nucleus is the smallest prefix of the sorted candidates whose mass reaches top_p; the draw walks it in token
    id order, not in sorted order: near-equal logits (ties are common in bf16) may sort either way, and walking the
    sorted order would then hand a whole interval of uniforms from one token to the other."""
    p = torch.exp(z_sorted - lse[:, None])
    c = torch.cumsum(p, dim=-1)
    keep = (c - p) < top_p  # the smallest prefix whose mass reaches top_p (always at least one token)
    keep[:, 0] = True
    n_keep = keep.sum(-1)
    beyond = torch.iinfo(ids.dtype).max
    order = torch.argsort(torch.where(keep, ids, beyond), dim=-1)[:, : int(n_keep.max())]
    kept_ids = ids.gather(1, order)
    kept_p = torch.where(keep.gather(1, order), p.gather(1, order), 0.0)
    c = torch.cumsum(kept_p, dim=-1)
    pos = torch.searchsorted(c, (u * c[:, -1].double())[:, None].to(c.dtype))[:, 0]
    return kept_ids.gather(1, torch.minimum(pos, n_keep - 1)[:, None])[:, 0]


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, uniforms: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] (float32), one uniform in [0, 1) per row -> (token ids [B], log-probs at temperature 1 [B])."""
    logits = logits.float()
    lse1 = torch.logsumexp(logits, dim=-1)
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)
    else:
        u = torch.tensor(uniforms, dtype=torch.float64, device=logits.device)
        z = logits / temperature if temperature != 1 else logits
        lse = torch.logsumexp(z, dim=-1)
        if top_p >= 1:
            c = torch.cumsum(torch.exp(z - lse[:, None]), dim=-1)
            pos = torch.searchsorted(c, (u * c[:, -1].double())[:, None].to(c.dtype))[:, 0]
            tokens = torch.clamp(pos, max=z.shape[-1] - 1)
        else:
            tokens = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
            rows = torch.arange(z.shape[0], device=z.device)
            for k in (*CANDIDATES, z.shape[-1]):
                zr, lr = z[rows], lse[rows]
                if k >= z.shape[-1]:
                    top, idx = torch.sort(zr, dim=-1, descending=True)
                else:
                    top, idx = torch.topk(zr, k, dim=-1)
                # a row is settled when its candidates hold the nucleus (mass >= top_p), or it was sorted in full
                covered = torch.exp(top - lr[:, None]).sum(-1) >= top_p if k < z.shape[-1] else None
                picked = _pick(top, idx, lr, top_p, u[rows])
                if covered is None or bool(covered.all()):
                    tokens[rows] = picked
                    break
                tokens[rows[covered]] = picked[covered]
                rows = rows[~covered]
    logps = logits.gather(1, tokens[:, None])[:, 0] - lse1
    return tokens, logps
