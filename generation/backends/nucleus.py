"""Temperature and top-p (nucleus) sampling driven by one uniform number per row, so each sample's randomness is
its own seeded stream whatever else shares the batch; also the sampled token's log-prob at temperature 1.

The uniform picks a token by inverse CDF in token-id order (inside the nucleus for top-p), so every token owns one
interval of [0, 1): logits that differ by rounding (bf16, another batch, another engine) move the interval ends by
the probability they move, and a sample changes only when its uniform falls that close to an end (docs/numerics.md).
"""
from __future__ import annotations

import torch

# Probability floors tried in turn: the candidates of a row are its tokens of probability >= the floor (at most
# 1/floor of them), which are always a prefix of the row sorted by probability; when they hold at least top_p of the
# mass (plus MARGIN, so that summing in another order cannot change the verdict) the nucleus lies among them and
# only they are sorted. A row that needs more is sorted in full (49k tokens: ~50x a threshold pass). One compare
# and one count over the row replace a top-k, which costs 5x as much at k = 64 and 15x at k = 2048.
THRESHOLDS = (1e-4, 1e-6)
MARGIN = 1e-4


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


def _candidates(z: torch.Tensor, rows: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each kept row (keep [R, V] bool, row i of it being row rows[i] of z), its kept entries of z sorted
    descending and their token ids, [R', K] each (R' rows with an entry, K the largest count); short rows are padded
    with -inf (probability 0) and an id past the vocabulary."""
    local, col = keep.nonzero(as_tuple=True)  # row-major: each row's token ids ascending
    counts = torch.bincount(local, minlength=keep.shape[0])  # from the few kept entries, not a pass over [R, V]
    present = counts > 0
    counts = counts[present]
    row = (torch.cumsum(present, 0) - 1)[local]  # rank among the rows with entries
    slot = torch.arange(col.shape[0], device=z.device) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
    values = torch.full((counts.shape[0], int(counts.max())), float("-inf"), dtype=z.dtype, device=z.device)
    ids = torch.full(values.shape, z.shape[-1], dtype=torch.long, device=z.device)
    values[row, slot] = z[rows[local], col]
    ids[row, slot] = col
    # stable: tied values keep token id order (each row's entries are laid out by id), so which of tokens tied at the
    # nucleus's edge fall inside is the row's own, not set by how wide other rows of the batch made the matrix
    top, order = torch.sort(values, dim=-1, descending=True, stable=True)
    return top, ids.gather(1, order)


def _nucleus(z: torch.Tensor, lse: torch.Tensor, p: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Top-p draws for every row of z [B, V] (temperature applied; p its probabilities), without sorting whole rows
    where a probability floor holds the nucleus; the same tokens as sorting every row in full."""
    tokens = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    rows = torch.arange(z.shape[0], device=z.device)
    zero = p.new_zeros(())
    for floor in THRESHOLDS:
        pr = p if rows.numel() == p.shape[0] else p[rows]
        keep = pr >= floor
        settled = torch.where(keep, pr, zero).sum(-1) >= top_p + MARGIN
        if bool(settled.any()):
            if not bool(settled.all()):
                keep &= settled[:, None]
            done = rows[settled]
            top, ids = _candidates(z, rows, keep)
            tokens[done] = _pick(top, ids, lse[done], top_p, u[done])
            rows = rows[~settled]
        if rows.numel() == 0:
            return tokens
    top, ids = torch.sort(z[rows], dim=-1, descending=True, stable=True)  # ties in id order, as above
    tokens[rows] = _pick(top, ids, lse[rows], top_p, u[rows])
    return tokens


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, uniforms: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] (float32), one uniform in [0, 1) per row -> (token ids [B], log-probs at temperature 1 [B])."""
    # Each pass over [B, V] costs about as much as the next: the shifted logits d, their exponentials and sums are
    # shared by the log-probs (temperature 1) and the draw (temperature T), and logsumexp is shift-invariant.
    logits = logits.float()
    top = logits.amax(dim=-1, keepdim=True)
    d = logits - top
    lse1 = top[:, 0] + d.exp().sum(-1).log()
    if temperature <= 0:
        tokens = logits.argmax(dim=-1)
    else:
        u = torch.tensor(uniforms, dtype=torch.float64, device=logits.device)
        z = d.mul_(1 / temperature) if temperature != 1 else d  # logits / T, shifted so that its largest is 0
        p = z.exp()
        total = p.sum(-1, keepdim=True)
        lse = total[:, 0].log()  # z's logsumexp (no overflow: every exponential is at most 1)
        p.div_(total)
        if top_p >= 1:
            c = torch.cumsum(p, dim=-1)
            pos = torch.searchsorted(c, (u * c[:, -1].double())[:, None].to(c.dtype))[:, 0]
            tokens = torch.clamp(pos, max=z.shape[-1] - 1)
        else:
            tokens = _nucleus(z, lse, p, top_p, u)
    logps = logits.gather(1, tokens[:, None])[:, 0] - lse1
    return tokens, logps
