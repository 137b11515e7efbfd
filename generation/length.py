"""Answer length and cut-off facts, defined once: the mean-length function every page and report uses, and
whether an answer stopped at the token limit ("truncated")."""
from __future__ import annotations

from collections.abc import Iterable

# The finish reason both backends give an answer stopped by max_new_tokens (generation/backends/base.py).
LENGTH_LIMIT = "length"


def is_truncated(finish_reason: str) -> bool:
    """True when the answer stopped at the token limit, not at its end-of-sequence token."""
    return finish_reason == LENGTH_LIMIT


def mean_tokens(responses: Iterable) -> float | None:
    """Mean `token_count` of the responses (sampled ids as stored, a finished answer's end-of-sequence token
    included); None for none."""
    counts = [r.token_count for r in responses]
    return sum(counts) / len(counts) if counts else None


def truncated_count(responses: Iterable) -> int:
    return sum(is_truncated(r.finish_reason) for r in responses)
