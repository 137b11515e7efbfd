"""The line the labelling page shows after a key press, saying what was stored."""
from __future__ import annotations

from prefcore.outcomes import SIDE_LABELS

STRENGTH_WORDS = {"slight": "slightly better", "clear": "clearly better"}


def saved_line(side: str, strength: str | None = None, comment: str = "") -> str:
    """What the labelling page says after a label is stored: "Saved: right, slightly better"."""
    parts = [SIDE_LABELS.get(side, side)]
    if strength in STRENGTH_WORDS and side in ("left", "right"):
        parts.append(STRENGTH_WORDS[strength])
    if comment.strip():
        parts.append("with a comment")
    return "Saved: " + ", ".join(parts)
