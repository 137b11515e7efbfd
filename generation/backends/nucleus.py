"""Temperature and top-p (nucleus) sampling driven by one uniform number per row, so each sample's randomness is
its own seeded stream whatever else shares the batch; also the sampled token's log-prob at temperature 1.
"""
from __future__ import annotations

import torch

TOP_CANDIDATES = 64  # a nucleus almost always fits in the top 64 tokens; rows where it does not are fully sorted


def _pick(z_sorted: torch.Tensor, lse: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Positions (into the sorted candidates) drawn by inverse CDF inside the nucleus; z_sorted descending."""
    p = torch.exp(z_sorted - lse[:, None])
    c = torch.cumsum(p, dim=-1)
    keep = (c - p) < top_p  # the smallest prefix whose mass reaches top_p (always at least one token)
    keep[:, 0] = True
    n_keep = keep.sum(-1)
    mass = c.gather(1, (n_keep - 1)[:, None])[:, 0]
    pos = torch.searchsorted(c, (u * mass)[:, None].to(c.dtype))[:, 0]
    return torch.minimum(pos, n_keep - 1)


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
            k = min(TOP_CANDIDATES, z.shape[-1])
            top, idx = torch.topk(z, k, dim=-1)
            tokens = idx.gather(1, _pick(top, lse, top_p, u)[:, None])[:, 0]
            # Rows whose nucleus is wider than the candidates: sort them in full.
            covered = torch.exp(top - lse[:, None]).sum(-1) >= top_p
            if not bool(covered.all()):
                rows = (~covered).nonzero()[:, 0]
                full, full_idx = torch.sort(z[rows], dim=-1, descending=True)
                pos = _pick(full, lse[rows], top_p, u[rows])
                tokens[rows] = full_idx.gather(1, pos[:, None])[:, 0]
    logps = logits.gather(1, tokens[:, None])[:, 0] - lse1
    return tokens, logps
