"""The training command line reads the files the import page reads: the same rows as JSONL, CSV (numbers and flag
lists as text), Parquet and a JSON array give the same pairs, and a bad cell names the file, line and field. It read
JSONL alone, so a CSV or Parquet export had to be converted first (its help said so)."""
from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from training.dpo import train
from training.dpo.data import load_pairs

ROWS = [
    {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": "Hi!", "rejected": "No.", "ref_chosen_logp": -3.5,
     "ref_rejected_logp": -7.25, "chosen_flags": [], "rejected_flags": ["cut"], "key": "a"},
    {"prompt": "Name a colour", "chosen": "Blue.", "rejected": "Seven", "preference_prob": 0.75, "key": "b"},
]


def _csv(path, rows):
    columns = sorted({c for r in rows for c in r})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if c not in r else json.dumps(r[c]) if isinstance(r[c], list) else r[c]
                             for c in columns])
    return path


def test_jsonl_csv_parquet_and_a_json_array_give_the_same_pairs(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    array = tmp_path / "p.json"
    array.write_text(json.dumps(ROWS, indent=2))
    parquet = tmp_path / "p.parquet"
    pd.DataFrame([{**r, "prompt": json.dumps(r["prompt"]) if isinstance(r["prompt"], list) else r["prompt"]}
                  for r in ROWS]).to_parquet(parquet)
    expected = load_pairs(jsonl)
    assert expected[0].prompt == [{"role": "user", "content": "Say hi"}]
    assert (expected[0].ref_chosen_logp, expected[0].ref_rejected_logp) == (-3.5, -7.25)
    assert expected[0].rejected_flags == frozenset({"cut"}) and expected[1].preference_prob == 0.75
    assert load_pairs(_csv(tmp_path / "p.csv", ROWS)) == expected
    assert load_pairs(array) == expected
    from_parquet = load_pairs(parquet)
    # Parquet holds the message list as text, read as the import page reads a Parquet string: the text itself
    assert from_parquet[1] == expected[1]
    assert from_parquet[0].ref_chosen_logp == -3.5 and from_parquet[0].rejected_flags == frozenset({"cut"})


@pytest.mark.parametrize("cell, said", [
    ("about -3", "p.csv:3: field 'ref_chosen_logp': expected a number, got 'about -3'"),
    ("5", "p.csv:3: field 'ref_chosen_logp': expected a finite log-probability (0 or below), got 5.0"),
])
def test_a_bad_number_in_a_csv_names_the_file_line_and_field(tmp_path, cell, said):
    rows = [dict(ROWS[1]), {**ROWS[1], "ref_chosen_logp": cell, "ref_rejected_logp": -1}]
    with pytest.raises(ValueError) as err:
        load_pairs(_csv(tmp_path / "p.csv", rows))
    assert str(err.value) == f"{tmp_path / said}"


def test_a_flag_list_that_is_not_json_names_the_file_line_and_field(tmp_path):
    path = _csv(tmp_path / "p.csv", [{**ROWS[1], "chosen_flags": "cut"}])
    with pytest.raises(ValueError, match=r"p\.csv:2: field 'chosen_flags': expected a JSON list of flag names"):
        load_pairs(path)


def test_a_file_the_import_page_refuses_is_refused_with_its_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,chosen,rejected\n"Q,A,B\n')
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'p.csv'}:2: not valid CSV"):
        load_pairs(path)
    empty = tmp_path / "e.csv"
    empty.write_text("prompt,chosen,rejected\n")
    with pytest.raises(ValueError, match="no pairs found"):
        load_pairs(empty)


def test_the_command_line_trains_on_a_csv_file(tiny_model_dir, tmp_path, capsys):
    data = _csv(tmp_path / "pairs.csv", [{"prompt": f"Q{i}", "chosen": "Thank you!", "rejected": "No."}
                                         for i in range(2)])
    code = train.main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out"),
                       "--dtype", "float32", "--epochs", "1"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["pairs"] == 2
    assert (tmp_path / "out" / "config.json").exists()
    assert train.main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "bad.parquet"), "--out",
                       str(tmp_path / "out2")]) == 2
    assert f"error: --data {tmp_path / 'bad.parquet'}: no such file" in capsys.readouterr().err


def test_a_flag_list_nested_past_the_json_parser_names_the_file_line_and_field(tmp_path):
    # json.loads raised RecursionError on the cell, which is no ValueError: the command ended in a traceback (exit 1)
    path = _csv(tmp_path / "p.csv", [{**ROWS[1], "chosen_flags": "[" * 100_000 + "]" * 100_000}])
    with pytest.raises(ValueError, match=r"p\.csv:2: field 'chosen_flags': expected a JSON list of flag names"):
        load_pairs(path)
