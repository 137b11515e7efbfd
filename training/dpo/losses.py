"""The DPO family of preference losses as small pure functions on per-sequence log-probs, per pair and unreduced.

Shapes: every log-prob argument is a [B] tensor of summed (or, for IPO and RRHF, length-averaged) response
log-probs; the result is [B] losses plus detached implicit rewards.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ROBUST_MAX_FLIP

PAIRED_LOSSES = ("sigmoid", "ipo", "hinge", "robust")


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """β · (log π(y|x) − log π_ref(y|x)), detached."""
    return (beta * (policy_logps - ref_logps)).detach()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    preference_prob: torch.Tensor | None = None,
    margin_offset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses and the chosen / rejected implicit rewards.

    `margin_offset` ([B], e.g. R-DPO's α·(|y_l| − |y_w|)) is subtracted from βh in the sigmoid, hinge and robust
    losses: −logσ(βh − m) and so on.

    With h = (pc − rc) − (pr − rr) and ε = label_smoothing:
    sigmoid: −[(1−ε)·logσ(βh) + ε·logσ(−βh)], where a [B] preference_prob p replaces 1−ε;
    ipo: (h − 1/(2β))²; hinge: relu(1 − βh); robust: [−(1−ε)·logσ(βh) + ε·logσ(−βh)] / (1−2ε)
    (with preference_prob, ε = 1 − p per pair; in the robust loss a pair with ε over ROBUST_MAX_FLIP adds 0).
    """
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    eps = label_smoothing
    if preference_prob is not None:
        if loss_type not in ("sigmoid", "robust"):
            raise ValueError(f"preference_prob applies to the sigmoid and robust losses, not {loss_type!r}")
        eps = 1.0 - preference_prob.to(h.dtype)
    if margin_offset is not None and loss_type == "ipo":
        raise ValueError("a margin offset applies to the sigmoid, hinge and robust losses, not 'ipo'")
    z = beta * h if margin_offset is None else beta * h - margin_offset.to(h.dtype)
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    elif loss_type == "robust":
        # a label at or near a coin (ε = 0.5: an imported or routed label of probability 0.5, where the formula
        # divides by 1 − 2ε = 0; or ε past ROBUST_MAX_FLIP, weighed over 10 times) adds no loss and no gradient
        eps = torch.as_tensor(eps, dtype=h.dtype, device=h.device)
        informative = eps <= ROBUST_MAX_FLIP
        scale = torch.where(informative, 1 - 2 * eps, torch.ones_like(eps))
        losses = torch.where(informative, (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / scale, z * 0)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}: expected one of {', '.join(PAIRED_LOSSES)}")
    return (
        losses,
        implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta),
    )


def kto_kl_estimate(policy_mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor) -> torch.Tensor:
    """KTO's batch estimate of KL(π‖π_ref): the mean log-ratio on mismatched (prompt, response) samples,
    clamped at 0 and detached (it only shifts the reference point, it is not trained)."""
    return (policy_mismatched_logps - ref_mismatched_logps).mean().clamp(min=0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO on unpaired responses: [B] log-probs, [B] bool desirable, scalar KL estimate -> ([B] losses, [B] rewards).

    desirable: λ_D·(1 − σ(β(r − z))), undesirable: λ_U·(1 − σ(β(z − r))), with r = log π − log π_ref, z = kl.
    """
    logratio = policy_logps - ref_logps
    desirable = desirable.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratio - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratio))),
    )
    return losses, implicit_rewards(policy_logps, ref_logps, beta)


def rrhf_loss(
    policy_avg_logps: torch.Tensor, scores: torch.Tensor, best_nll: torch.Tensor, *, sft_weight: float = 1.0
) -> torch.Tensor:
    """RRHF over K ranked responses per prompt: [B, K] length-averaged log-probs, [B, K] scores (higher is better),
    [B] NLL of the best response -> [B] losses Σ_{s_i > s_j} relu(p_j − p_i) + sft_weight · NLL(best)."""
    better = scores[:, :, None] > scores[:, None, :]  # [B, K, K]: i better than j
    gaps = torch.relu(policy_avg_logps[:, None, :] - policy_avg_logps[:, :, None])  # p_j - p_i at [i, j]
    return (gaps * better).sum(dim=(1, 2)) + sft_weight * best_nll


def nll_loss(chosen_logps: torch.Tensor, chosen_token_counts: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of the chosen responses: [B] summed log-probs, [B] counts -> [B]."""
    return -chosen_logps / chosen_token_counts.clamp(min=1).to(chosen_logps.dtype)
