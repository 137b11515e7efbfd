"""Label noise, on purpose: a judge that flips a stated share of another judge's decided verdicts.

People agree with each other on 65-73% of pairwise labels; rules never disagree with themselves. To measure how
the loop (and a loss such as cDPO's label smoothing) copes with noisy annotators, wrap a rule:

    judges.noise:Noisy?judge=judges.rules:length_target&share=0.25&seed=1

A decided verdict ("a" or "b") is flipped when a hash of (seed, prompt, both answers) falls below `share`, so the
same question always gets the same answer (a resumed run, a retried call) and the flipped share over many
distinct questions is `share` within binomial error. Ties and "both bad" are kept as they are. The inner judge is
loaded by name under the same allow-list as any judge; a name with its own arguments is URL-encoded
(`judge=judges.rules:LengthTarget%3Ftarget_words%3D40`).
"""
from __future__ import annotations

import hashlib

from . import A, B, Judge, JudgeError, load_judge, normalise_verdict


class Noisy:
    """`judge` (a judge's name) with a share of its decided verdicts flipped, seeded."""

    def __init__(self, judge: str, share: float, seed: int = 0, dtype: str | None = None):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise JudgeError(f"judges.noise:Noisy: share must be a number from 0 to 1 (got {share!r})")
        if not isinstance(judge, str) or judge.partition("?")[0].strip() in ("judges.noise:Noisy", "judges.noise.Noisy"):
            raise JudgeError("judges.noise:Noisy: judge must name another judge, e.g. judges.rules:length_target")
        try:
            seed = int(seed)
        except (TypeError, ValueError, OverflowError):
            raise JudgeError(f"judges.noise:Noisy: seed must be a whole number (got {seed!r})") from None
        self.name, self.share, self.seed = judge, float(share), seed
        self.inner: Judge = load_judge(judge, dtype=dtype)

    def flips(self, prompt: str, response_a: str, response_b: str) -> bool:
        """Whether this question's decided verdict is flipped: a uniform draw from a hash of the question."""
        key = "\x00".join((str(self.seed), prompt, response_a, response_b)).encode("utf-8", "surrogatepass")
        draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
        return draw < self.share

    def __call__(self, prompt: str, response_a: str, response_b: str):
        result = self.inner(prompt, response_a, response_b)
        outcome = normalise_verdict(result)
        if outcome in (A, B) and self.flips(prompt, response_a, response_b):
            return B if outcome == A else A
        return result

    def __repr__(self) -> str:
        return f"Noisy({self.name!r}, share={self.share}, seed={self.seed})"
