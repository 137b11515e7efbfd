"""A preference data set as the Hugging Face Hub lays one out: Parquet shards under data/ and a README.md dataset
card (YAML header with the licence, the data files and the features; then columns, counts and rounds), so that
`datasets.load_dataset(PATH)` loads it and `huggingface-cli upload` publishes it as it is."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_ROWS = 50_000  # rows per Parquet file: a few tens of MB of text, as the Hub's own converter aims for
# rows built and written at a time (a Parquet row group): an export job reports and hears a Cancel between
WRITE_ROWS = 5_000
DEFAULT_LICENSE = "unknown"
COLUMNS = {
    "prompt": "the prompt: text, or the chat so far as {role, content} messages",
    "chosen": "the preferred response (text, or one assistant message)",
    "rejected": "the other response",
    "preference_prob": "probability that `chosen` is preferred, from 0.5 to 1, from the labels' strengths (or votes, "
                       "with soft labels: votes that weigh out even give 0.5, a row the sigmoid loss trains as a coin "
                       "flip, and a tie of the majority is left out)",
    "vote_share": "share of the pair's labels that agreed with its decision: the majority, or a gold pair's known "
                  "answer (1.0 for a gold pair nobody labelled)",
    "pair_id": "the pair's id in PrefLoop",
    "round": "the labelling round the pair belongs to (null: none)",
    "gold": "whether the pair is a gold pair with a known answer",
    "annotator_ids": "ids of the people and judges whose labels decided the pair",
    "judge_labels": "how many of those labels are by judges (automatic accounts), not people",
    "labelled_at": "the times of those labels (ISO 8601, UTC)",
    "truncated": "whether either response stopped at the generation token limit (it may end mid-sentence)",
    "chosen_truncated": "whether `chosen` stopped at the generation token limit",
    "rejected_truncated": "whether `rejected` stopped at the generation token limit",
    "comments": "what the people and judges whose labels decided the pair wrote beside them (empty comments left "
                "out), oldest first",
}


def table_of(rows: list[dict], *, built: Callable[[int], None] | None = None) -> pa.Table:
    """The rows as one Arrow table, typed as `pa.Table.from_pylist(rows)` types them (a column with no value in one
    part takes the type the others give it), built WRITE_ROWS rows at a time, telling `built(n)` of each n rows
    built; an exception it raises stops the building there. Built in one call, a large export's table took most of
    the time its file was written, and the job's bar stood still through it."""
    parts = []
    for start in range(0, len(rows), WRITE_ROWS):
        part = pa.Table.from_pylist(rows[start:start + WRITE_ROWS])
        parts.append(part)
        if built is not None:
            built(part.num_rows)
    if len(parts) < 2:
        return parts[0] if parts else pa.Table.from_pylist(rows)
    return pa.concat_tables(parts, promote_options="permissive")


def write_parquet(table: pa.Table, path: Path | str, *, written: Callable[[int], None] | None = None) -> None:
    """Write `table` to a Parquet file WRITE_ROWS rows at a time (one schema: the whole table's), telling
    `written(n)` of each n rows written; an exception it raises stops the writing there."""
    with pq.ParquetWriter(path, table.schema) as writer:
        if table.num_rows == 0:
            writer.write_table(table)  # a file with the columns and no rows
        for start in range(0, table.num_rows, WRITE_ROWS):
            part = table.slice(start, WRITE_ROWS)
            writer.write_table(part)
            if written is not None:
                written(part.num_rows)


def write_hf_folder(rows: list[dict], folder: Path, *, license: str = DEFAULT_LICENSE,
                    written: Callable[[int], None] | None = None, built: Callable[[int], None] | None = None) -> None:
    """Write the shards and the card into `folder` (which exists and is empty: the exporter's temporary folder);
    `built(n)` is told of each n rows made into the table (table_of), then `written(n)` of each n written
    (write_parquet)."""
    data = folder / "data"
    data.mkdir()
    table = table_of(rows, built=built)
    shards = max(1, -(-len(rows) // SHARD_ROWS))
    for i in range(shards):
        part = table.slice(i * SHARD_ROWS, SHARD_ROWS)
        write_parquet(part, data / f"train-{i:05d}-of-{shards:05d}.parquet", written=written)
    (folder / "README.md").write_text(dataset_card(rows, table.schema, license=license), encoding="utf-8")


def _yaml_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The Hub's size tags, each with the row count it starts at ("n>1M" is not one of them: the Hub reads 1M<n<10M)
SIZE_TAGS = [(10**12, "n>1T"), (10**11, "100B<n<1T"), (10**10, "10B<n<100B"), (10**9, "1B<n<10B"),
             (10**8, "100M<n<1B"), (10**7, "10M<n<100M"), (10**6, "1M<n<10M"), (10**5, "100K<n<1M"),
             (10**4, "10K<n<100K"), (10**3, "1K<n<10K")]


def size_category(rows: int) -> str:
    """The Hugging Face Hub's size_categories tag for a dataset of this many rows."""
    return next((tag for start, tag in SIZE_TAGS if rows >= start), "n<1K")


def dataset_card(rows: list[dict], schema: pa.Schema, *, license: str = DEFAULT_LICENSE) -> str:
    rounds = Counter(row.get("round") for row in rows)
    conversational = bool(rows) and isinstance(rows[0].get("prompt"), list)
    size = size_category(len(rows))
    header = [
        "---",
        f"license: {_yaml_text(license)}",
        "task_categories:\n- text-generation",
        "tags:\n- dpo\n- preference\n- trl\n- prefloop",
        f"size_categories:\n- {size}",
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet",
        "---",
    ]
    columns = "\n".join(f"| `{field.name}` | {field.type} | {COLUMNS.get(field.name, '')} |" for field in schema)
    by_round = "\n".join(f"| {'none' if r is None else r} | {n} |"
                         for r, n in sorted(rounds.items(), key=lambda item: (item[0] is None, item[0] or 0)))
    return "\n".join(header) + f"""

# Preference data exported from PrefLoop

{len(rows)} decided pairs in TRL's preference format ({'conversational: message lists' if conversational else
'standard: plain text'}), exported {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Ties and "both bad" outcomes are left
out; pairs on eval prompts are never exported, nor pairs held back from people as near-duplicates.

Load it with `datasets.load_dataset("<this folder>")` and train with `trl.DPOTrainer` as it is.

## Columns

| column | type | meaning |
|---|---|---|
{columns}

## Rows per labelling round

| round | rows |
|---|---|
{by_round or '| (none) | 0 |'}

## Licence

`{license}`: set by whoever exported the data (`export_preferences --license`). The prompts and responses keep
the terms of their sources and of the models that wrote them.
"""
