"""Write the decided pairs as a preference data set in TRL's format: JSONL, Parquet or a `datasets` folder.

Rows are prompt / chosen / rejected, conversational (message lists) when any prompt is a chat, with the preference
probability, the annotators' ids and the label times.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .dataset import Decision, decisions

EXPORT_FORMATS = ("jsonl", "parquet", "hf")


def preference_rows(decided: list[Decision]) -> list[dict]:
    """One TRL row per decided pair."""
    conversational = any(d.pair.prompt.messages for d in decided)
    rows = []
    for d in decided:
        prompt = d.pair.prompt
        if conversational:
            row = {
                "prompt": prompt.messages or [{"role": "user", "content": prompt.text}],
                "chosen": [{"role": "assistant", "content": d.chosen.text}],
                "rejected": [{"role": "assistant", "content": d.rejected.text}],
            }
        else:
            row = {"prompt": prompt.text, "chosen": d.chosen.text, "rejected": d.rejected.text}
        row.update(
            preference_prob=d.preference_prob,
            vote_share=d.vote_share,
            pair_id=d.pair.pk,
            round=d.pair.round.number if d.pair.round else None,
            gold=d.pair.is_gold,
            annotator_ids=[label.annotator_id for label in d.labels],
            labelled_at=[label.created.isoformat() for label in d.labels],
        )
        rows.append(row)
    return rows


def write_rows(rows: list[dict], out: Path | str, fmt: str = "jsonl") -> Path:
    """Write the rows atomically (a temporary file or folder renamed into place)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        import datasets

        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return out
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    os.close(fd)
    if fmt == "jsonl":
        with open(tmp_name, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(tmp_name, index=False)
    os.replace(tmp_name, out)
    return out


def export_preferences(
    out: Path | str,
    *,
    fmt: str = "jsonl",
    rounds: list[int] | None = None,
    min_agreement: float | None = None,
    include_automatic: bool = True,
    soft_labels: bool = False,
) -> int:
    """Write every decided pair (of the given rounds) to `out`; returns the number of rows."""
    rows = preference_rows(
        decisions(rounds=rounds, min_agreement=min_agreement, include_automatic=include_automatic,
                  soft_labels=soft_labels)
    )
    write_rows(rows, out, fmt)
    return len(rows)
