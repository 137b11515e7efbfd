"""Loss terms for the tests alone, allowed by name (--allow-term, allowed_terms) where a test needs one."""
import math

from training.dpo.outcome import TrainingCancelled
from training.dpo.terms import TermBatch, TermResult


def nan_loss(batch: TermBatch) -> TermResult:
    """A loss that is not a number: the step diverges (TrainingDiverged) before the optimiser takes it."""
    return TermResult(loss=batch.policy_chosen.sum() * math.nan)


def cancelling(batch: TermBatch) -> TermResult:
    """A term that stops the run from inside (as a term watching a deadline or a flag might)."""
    raise TrainingCancelled("stopped by the term: its deadline passed")
