"""Constraint terms of the DPO loss: what a preference loss alone does not see, as pluggable pieces.

A term is named like a judge ("package.module:attr", with "?key=value" arguments for a factory) and loaded only
when the name is allowed: the built-in terms below, plus those the caller allows (the product: the
PREFLOOP_LOSS_TERMS setting; the command line: --allow-term). A term is called once per batch with a `TermBatch`
(policy and reference log-probs of chosen and rejected, response lengths in tokens, the responses' rule flags such
as "cut") and returns a `TermResult`: a per-pair `margin` subtracted from β·h inside the sigmoid, hinge and robust
losses (how R-DPO regularises length), and/or a scalar `loss` added to the batch loss. Each term's added loss is
logged per step as "terms/<name>".

Built in:
- `length` (R-DPO, Park et al. 2024): margin α·(|y_l| − |y_w|), so the sigmoid reads β·h + α·(|y_w| − |y_l|): the
  length difference explains part of a preference, and the policy's implicit reward need not learn it (a longer
  chosen answer's win pushes the policy toward length less, a shorter one's more); α is DPOConfig.length_alpha.
  Before 6 December 2026 the sign was the other way round, which rewarded length instead.
- `rule_penalty`: a hinge that pushes the implicit reward β·(log π − log π_ref) of every response carrying a flag
  (by default "cut": stopped at the token limit) below −margin: weight · mean over flagged responses of
  relu(reward + margin); DPOConfig.rule_penalty is the weight.
- `margin_cap` (`training.dpo.terms:MarginCap?cap=C`): β·h counts up to C and no further, so a pair past it gives no
  gradient; for the sigmoid and robust losses (it bounds the robust loss, whose pull toward a larger margin never
  fades; the hinge stops at β·h = 1 by itself). Named without `?cap=`, C is ln((1 − ε)/ε) for the run's label
  smoothing ε (label_smoothing, or what label_agreement implies, measured included).
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

import torch

from training.dpo.config import BOUNDS, MARGIN_LOSSES, Bound
from training.dpo.outcome import TrainingCancelled, TrainingDiverged


@dataclass
class TermBatch:
    policy_chosen: torch.Tensor  # [B] summed log-probs
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_tokens: torch.Tensor  # [B] response lengths in tokens
    rejected_tokens: torch.Tensor
    chosen_flags: Sequence[frozenset[str]]  # per pair, e.g. frozenset({"cut"})
    rejected_flags: Sequence[frozenset[str]]
    beta: float


@dataclass
class TermResult:
    margin: torch.Tensor | None = None  # [B], subtracted from β·h
    loss: torch.Tensor | None = None  # scalar, added to the batch loss


Term = Callable[[TermBatch], TermResult]


class TermFailed(ValueError):
    """A loss term raised, or returned something without a TermResult's margin and loss, on a training batch: said
    naming the term (a term of one's own, allowed with --allow-term, ended the training command line in a traceback)."""


def apply_term(term: Term, batch: TermBatch) -> TermResult:
    """`term(batch)`, or a TermFailed naming the term and what went wrong."""
    try:
        result = term(batch)
    except (TrainingCancelled, TrainingDiverged):  # a stop or a divergence said from inside a term stays what it is
        raise
    except Exception as exc:
        raise TermFailed(f"loss term {term_name(term)} failed on a training batch: {type(exc).__name__}: {exc}") from exc
    if not (hasattr(result, "margin") and hasattr(result, "loss")):
        raise TermFailed(f"loss term {term_name(term)} returned {type(result).__name__}, not a TermResult (its margin "
                         "and loss, either None)")
    return result


def _bounded(term: str, argument: str, value, bound: Bound, setting: str) -> float:
    """`value` as a float when `bound` holds it, else a ValueError naming the argument and the setting whose bound
    it is: a term named in loss_terms takes no weight its own setting would refuse."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan  # "abc" is refused below with the bound, as NaN is
    if not bound.holds(number):
        why = f" ({bound.why})" if bound.why else ""
        raise ValueError(f"{term} {argument}={value!r}: must be a finite number {bound}{why}, as DPOConfig.{setting}")
    return number


class LengthRegulariser:
    """R-DPO's length term: margin α·(|y_l| − |y_w|), subtracted from β·h: −log σ(β·h + α·(|y_w| − |y_l|)), the
    loss of the length-penalised reward r − α·|y| (Park et al. 2024). With labels that prefer neither of two
    answers, its gradient moves the policy toward the shorter one."""

    name = "length"
    shifts_margin = True  # only a loss with a margin takes it (MARGIN_LOSSES)

    def __init__(self, alpha: float):
        self.alpha = _bounded("length", "alpha", alpha, BOUNDS["length_alpha"], "length_alpha")

    def __call__(self, batch: TermBatch) -> TermResult:
        return TermResult(margin=self.alpha * (batch.rejected_tokens - batch.chosen_tokens).to(batch.policy_chosen.dtype))


class RulePenalty:
    """weight · mean over flagged responses of relu(β·(log π − log π_ref) + margin); 0 when none is flagged."""

    name = "rule_penalty"

    def __init__(self, weight: float = 1.0, flag: str = "cut", margin: float = 0.0):
        self.weight = _bounded("rule_penalty", "weight", weight, BOUNDS["rule_penalty"], "rule_penalty")
        self.flag, self.margin = str(flag), float(margin)
        if not math.isfinite(self.margin):  # relu(reward + inf) is inf, and its gradient NaN
            raise ValueError(f"rule_penalty margin={self.margin!r}: must be a finite number")

    def __call__(self, batch: TermBatch) -> TermResult:
        rewards, flagged = [], []
        for policy, ref, flags in ((batch.policy_chosen, batch.ref_chosen, batch.chosen_flags),
                                   (batch.policy_rejected, batch.ref_rejected, batch.rejected_flags)):
            rewards.append(batch.beta * (policy - ref))
            flagged.append(torch.tensor([self.flag in f for f in flags], device=policy.device))
        reward, mask = torch.cat(rewards), torch.cat(flagged)
        if not bool(mask.any()):
            return TermResult(loss=reward.sum() * 0)
        return TermResult(loss=self.weight * torch.relu(reward[mask] + self.margin).mean())


class MarginCap:
    """A pair's β·h counts up to `cap` and no further: margin relu(β·h − cap), so the loss sees min(β·h, cap) (before
    the other terms' margins) and a pair past the cap gives no gradient. The sigmoid loss's pull fades as β·h grows;
    the robust loss's never does (its ε·log σ(−β·h) term keeps rewarding a larger margin), and this bounds it.
    Named without a cap, it takes ln((1 − ε)/ε) from the run's label smoothing ε (given, or implied by
    label_agreement, measured included): where the robust loss's never-fading part starts to outweigh the rest
    (docs/defaults.md, measurement 10)."""

    name = "margin_cap"
    shifts_margin = True

    def __init__(self, cap: float | None = None):
        self.cap = None if cap is None else float(cap)
        if self.cap is not None and not (math.isfinite(self.cap) and self.cap > 0):
            raise ValueError(f"cap must be a positive number (got {cap!r})")

    @staticmethod
    def for_smoothing(smoothing: float) -> float:
        """The cap a flip rate ε asks for: ln((1 − ε)/ε), cDPO's optimum margin; a ValueError without one."""
        if not 0 < smoothing < 0.5:
            raise ValueError("margin_cap without cap= takes ln((1 - eps)/eps) from the label smoothing eps, and this "
                             f"run's is {smoothing:g} (every label trusted: the loss's pull fades by itself): give "
                             "label_smoothing, or label_agreement under 1, or cap=C")
        return math.log((1 - smoothing) / smoothing)

    def __call__(self, batch: TermBatch) -> TermResult:
        h = (batch.policy_chosen - batch.ref_chosen) - (batch.policy_rejected - batch.ref_rejected)
        return TermResult(margin=torch.relu(batch.beta * h - self.cap))


BUILT_IN_TERMS = ("training.dpo.terms:LengthRegulariser", "training.dpo.terms:RulePenalty",
                  "training.dpo.terms:MarginCap")


def load_term(path: str, allowed: Collection[str] = ()) -> Term:
    """The term named by `path` ("package.module:attr", optionally "?key=value&..." for a factory), if it is a
    built-in term or in `allowed`; a ValueError naming it otherwise. Nothing is imported before the check."""
    name, _, query = path.strip().partition("?")
    if name not in (*BUILT_IN_TERMS, *allowed):
        raise ValueError(f"loss term {path!r} is not allowed: the terms are {', '.join((*BUILT_IN_TERMS, *allowed))}")
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(f"loss term {path!r}: expected 'package.module:attr'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"loss term {path!r}: cannot load it: {exc}") from None
    if query:
        kwargs = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            try:
                kwargs[key] = float(value)
            except ValueError:
                kwargs[key] = value
        try:
            target = target(**kwargs)
        except Exception as exc:
            raise ValueError(f"loss term {path!r}: building it failed: {type(exc).__name__}: {exc}") from None
    elif isinstance(target, type):  # a term class named without arguments: its defaults (or a clear error now)
        try:
            target = target()
        except Exception as exc:
            raise ValueError(f"loss term {path!r}: building it failed: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ValueError(f"loss term {path!r} is not callable")
    return target


CAPPABLE_LOSSES = ("sigmoid", "robust")  # the hinge stops at β·h = 1 by itself: a cap there does nothing or harm


def configured_terms(length_alpha: float, rule_penalty: float, names: str, allowed: Collection[str] = (),
                     loss_type: str | None = None, smoothing: float = 0.0) -> list[Term]:
    """The terms a configuration asks for: the two built-ins by their weights, then each comma-separated name.
    Given the `loss_type`, a margin cap is refused with a loss it cannot bound, and a term that shifts the margin
    (one whose `shifts_margin` is true: the length term, a cap) with a loss that has none (a term of your own that
    does not say so can only fail when it runs); two caps are refused; a cap named without one takes it from the
    label `smoothing`."""
    terms: list[Term] = []
    if length_alpha:
        terms.append(LengthRegulariser(length_alpha))
    if rule_penalty:
        terms.append(RulePenalty(rule_penalty))
    terms += [load_term(n, allowed) for n in names.split(",") if n.strip()]
    caps = [term for term in terms if isinstance(term, MarginCap)]
    if len(caps) > 1:
        raise ValueError("margin_cap is given more than once: give one cap")
    if caps and loss_type is not None and loss_type not in CAPPABLE_LOSSES:
        raise ValueError(f"the margin_cap term bounds the margin of the {' and '.join(CAPPABLE_LOSSES)} losses, not "
                         f"the {loss_type!r} loss" + (" (it stops at beta*h = 1 by itself)" if loss_type == "hinge"
                                                      else ""))
    for term in terms:
        if getattr(term, "shifts_margin", False) and loss_type is not None and loss_type not in MARGIN_LOSSES:
            losses = ", ".join(MARGIN_LOSSES[:-1]) + " and " + MARGIN_LOSSES[-1]
            raise ValueError(f"the {term_name(term)} term shifts the margin of the {losses} losses only, and the "
                             f"{loss_type!r} loss has no margin: choose one of those losses")
    # a new term, not the named one changed: an instance a module holds is shared by every run that names it
    return [MarginCap(MarginCap.for_smoothing(smoothing)) if isinstance(term, MarginCap) and term.cap is None else term
            for term in terms]


def terms_for(config, allowed: Collection[str] = ()) -> list[Term]:
    """The terms a DPOConfig asks for, checked against its loss and taking a bare cap from its label smoothing."""
    return configured_terms(config.length_alpha, config.rule_penalty, config.loss_terms, allowed, config.loss_type,
                            config.smoothing)


def term_name(term: Term) -> str:
    return getattr(term, "name", None) or getattr(term, "__name__", None) or type(term).__name__
