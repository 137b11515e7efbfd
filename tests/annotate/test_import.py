"""Imports: prompts, pairs and preferences (TRL, HH-RLHF, UltraFeedback) from JSONL, CSV and Parquet; checked whole,
with the file, line and field named on a bad row, then written a chunk of rows a transaction."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from annotate.importers import ImportProblem, import_preferences, import_prompts
from annotate.models import AnnotatorProfile, Label, LabellingRound, Pair
from generation.models import Prompt, Response, normalised_hash

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
HH_SAMPLE = ROOT / "data" / "hh-rlhf-sample.jsonl"


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompts_from_jsonl_with_text_and_chats_twice_adds_nothing(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "What is DPO?"}, {"prompt": chat}, {"prompt": "What  is DPO? "}])
    call_command("import_prompts", str(path), split="eval", tag="t1")
    assert Prompt.objects.count() == 2  # the third is the first with other spacing
    stored = Prompt.objects.get(messages__isnull=False)
    assert stored.messages == chat and stored.text == "Name a colour." and stored.split == "eval"
    assert stored.tag == "t1" and stored.hash == normalised_hash(chat)
    call_command("import_prompts", str(path))
    assert Prompt.objects.count() == 2


def test_a_row_that_sets_what_the_import_sets_for_every_row_is_refused_by_line_and_field(tmp_path, client, staff):
    """A row's split, tag, round or labels_needed was dropped without a word (the API refused them): a Hugging Face
    file's "split": "eval" rows went into train, and, train prompts then, could never be imported as eval."""
    from tests.annotate.importing import upload

    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": "kept apart?"}, {"prompt": "an eval one?", "split": "eval"}])
    with pytest.raises(CommandError, match=r"p.jsonl: line 2: field 'split': set for the whole import .*--split"):
        call_command("import_prompts", str(prompts))
    pd.DataFrame({"prompt": ["x?", "y?"], "tag": ["", "math"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CommandError, match=r"t.csv: line 3: field 'tag': set for the whole import"):
        call_command("import_prompts", str(tmp_path / "t.csv"))
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q?", "response_a": "A", "response_b": "B", "round": 7,
                                                "labels_needed": 3}])
    with pytest.raises(CommandError, match=r"pairs.jsonl: line 1: field 'round': set for the whole import .*--round"):
        call_command("import_pairs", str(pairs))
    client.force_login(staff)
    job, page = upload(client, "p.jsonl", prompts.read_bytes(), kind="prompts")
    assert job.status == "failed" and "line 2: field &#x27;split&#x27;: set for the whole import" in page.content.decode()
    assert not Prompt.objects.exists() and not Pair.objects.exists()


def test_prompts_from_csv_and_parquet(tmp_path):
    pd.DataFrame({"prompt": ["one?", '[{"role": "user", "content": "two?"}]']}).to_csv(tmp_path / "p.csv", index=False)
    call_command("import_prompts", str(tmp_path / "p.csv"))
    pd.DataFrame({"prompt": ["three?", "four?"]}).to_parquet(tmp_path / "p.parquet")
    call_command("import_prompts", str(tmp_path / "p.parquet"))
    assert sorted(Prompt.objects.values_list("text", flat=True)) == ["four?", "one?", "three?", "two?"]
    assert Prompt.objects.get(text="two?").messages is None  # one user turn is the same prompt as its text


def test_a_one_message_chat_on_an_eval_prompt_is_set_aside_like_its_text(tmp_path):
    """The leak: an eval prompt written as one user message was stored as a second, train prompt (hashed as a chat,
    not as its text), and its pair went into training."""
    from annotate.dataset import decided_pairs

    Prompt.objects.create(text="Explain what gravity is.", split=Prompt.EVAL)
    as_chat = {"prompt": [{"role": "user", "content": "Explain what gravity is."}],
               "chosen": [{"role": "assistant", "content": "g3"}], "rejected": [{"role": "assistant", "content": "g4"}]}
    result = import_preferences(_jsonl(tmp_path / "leak.jsonl", [as_chat]), round_number=5)
    assert result.created == 0 and list(result.set_aside) == [1]
    assert Prompt.objects.count() == 1 and decided_pairs() == []


def test_the_apps_own_export_imports_back_as_already_present(tmp_path):
    """Once any prompt is a chat, the export writes plain prompts as one user message: re-imported, 16 of 17 pairs
    were added again (hashed as chats) and would have been trained on twice."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    rows = [{"prompt": chat, "chosen": "Red.", "rejected": "Blue, I think."}] + [
        {"prompt": f"Question {k}?", "chosen": f"Answer {k}.", "rejected": f"No idea {k}."} for k in range(4)]
    import_preferences(_jsonl(tmp_path / "in.jsonl", rows))
    out = tmp_path / "out.jsonl"
    call_command("export_preferences", str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(r["prompt"], list) for r in exported)  # plain prompts written as one user message
    again = import_preferences(out)
    assert (again.created, again.skipped) == (0, 5) and Pair.objects.count() == 5


def test_rows_that_contradict_a_label_already_imported_are_named_not_counted_as_present(tmp_path):
    """The same prompt and answers preferred the other way (or tied), in one file or by a later import: the first
    label is kept and the later lines are named; they were counted "already present" and their disagreement lost."""
    q = {"prompt": "Which is warmer?"}
    rows = [{**q, "chosen": "Sun.", "rejected": "Ice."}, {**q, "chosen": "Ice.", "rejected": "Sun."},
            {**q, "chosen": "Sun.", "rejected": "Ice."},
            {**q, "chosen": "Sun.", "rejected": "Ice.", "score_chosen": 5, "score_rejected": 5}]
    result = import_preferences(_jsonl(tmp_path / "in.jsonl", rows), fmt="ultrafeedback")
    assert (result.created, result.skipped, result.disagreeing) == (1, 1, (2, 4))
    assert str(result) == ("1 added, 1 already present, 2 not added because they disagree with the label already "
                           "imported for the same prompt and answers (that label is kept): lines 2, 4")
    later = import_preferences(_jsonl(tmp_path / "later.jsonl", [{"prompt": "Other?", "chosen": "x", "rejected": "y"},
                                                                 rows[1]]))
    assert (later.created, later.skipped, later.disagreeing) == (1, 0, (2,))
    assert "it disagrees" in str(later)
    (label,) = Label.objects.filter(pair__prompt__text="Which is warmer?")
    assert label.choice == "a" and label.pair.response_a.text == "Sun."


def test_an_export_imported_elsewhere_keeps_each_pairs_labelling_round(tmp_path):
    rows = [{"prompt": "One?", "chosen": "a", "rejected": "b", "round": 1},
            {"prompt": "Two?", "chosen": "a", "rejected": "b", "round": 2}, {"prompt": "Three?", "chosen": "a",
                                                                            "rejected": "b", "round": None}]
    import_preferences(_jsonl(tmp_path / "in.jsonl", rows))
    out = tmp_path / "out.parquet"
    call_command("export_preferences", str(out), format="parquet")
    Pair.objects.all().delete()
    LabellingRound.objects.all().delete()
    assert import_preferences(out).created == 3
    assert dict(Pair.objects.values_list("prompt__text", "round__number")) == {"One?": 1, "Two?": 2, "Three?": None}
    pd.DataFrame({"prompt": ["Four?"], "chosen": ["a"], "rejected": ["b"], "round": [3.0]}).to_parquet(
        tmp_path / "old.parquet")  # an older export wrote the round as a float
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected,round\nFive?,a,b,4\nSix?,a,b,5.0\n")  # 5.0: pandas's
    (tmp_path / "other.csv").write_text("prompt,chosen,rejected,round\nSeven?,a,b,r1\n")  # another data set's column
    import_preferences(tmp_path / "old.parquet")
    import_preferences(tmp_path / "p.csv")
    import_preferences(tmp_path / "other.csv", round_number=7)  # the round the import names wins; the column unread
    assert dict(Pair.objects.filter(prompt__text__in=["Four?", "Five?", "Six?", "Seven?"]).values_list(
        "prompt__text", "round__number")) == {"Four?": 3, "Five?": 4, "Six?": 5, "Seven?": 7}


@pytest.mark.parametrize("value", ["r1", -1, 2**31, 1.5, True])
def test_a_row_round_that_is_no_round_number_is_named(tmp_path, value):
    path = _jsonl(tmp_path / "in.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"},
                                          {"prompt": "Q2?", "chosen": "a", "rejected": "b", "round": value}])
    with pytest.raises(ImportProblem, match=r"^in.jsonl: line 2: field 'round': expected a labelling round's number"):
        import_preferences(path)
    assert not Pair.objects.exists() and not LabellingRound.objects.exists()


def test_line_and_paragraph_separators_inside_texts_survive_a_round_trip(tmp_path):
    """U+2028, U+2029 and U+0085 are written unescaped by the export, and str.splitlines() broke the row at them."""
    text = "para1\u2028para2\u2029end\x85nel"
    import_preferences(_jsonl(tmp_path / "in.jsonl", [{"prompt": "Q?", "chosen": text, "rejected": "r"}]))
    out = tmp_path / "out.jsonl"
    call_command("export_preferences", str(out))
    Pair.objects.all().delete(), Response.objects.all().delete()
    assert import_preferences(out).created == 1
    assert Response.objects.filter(text=text).exists()


def test_a_utf8_byte_order_mark_before_json_lines_is_not_a_row(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "Q?", "chosen": "a", "rejected": "b"}).encode() + b"\n")
    assert import_preferences(path).created == 1


@pytest.mark.parametrize("rows,expected", [
    ([{"prompt": "ok"}, {"prompt": "fine"}, {"prompt": ""}], "p.jsonl: line 3: field 'prompt': empty"),
    ([{"prompt": "ok"}, {"text": "no prompt"}], "p.jsonl: line 2: field 'prompt': missing"),
    ([{"prompt": "ok"}, "{not json"], "p.jsonl: line 2: not valid JSON"),
    ([{"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}],
     "p.jsonl: line 1: field 'prompt': a chat prompt must end with a user message"),
    ([{"prompt": 12}], "p.jsonl: line 1: field 'prompt': expected text or a list of messages, got int"),
    # a field spelt nearly so is named (found by an outside review: "missing" alone, of a value that was there)
    ([{"prompt": "ok"}, {"promt": "typo"}],
     "p.jsonl: line 2: field 'prompt': missing (the row has 'promt': a misspelling of 'prompt'?)"),
])
def test_one_bad_row_names_file_line_and_field_and_stores_nothing(tmp_path, rows, expected):
    path = _jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(CommandError) as err:
        call_command("import_prompts", str(path))
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)
    assert not Prompt.objects.exists()


def test_imports_store_the_same_where_the_database_returns_no_ids_from_a_bulk_insert(tmp_path, monkeypatch):
    """SQLite before 3.35 (which Django 5.2 still supports) gives bulk-inserted rows no ids: each is inserted alone."""
    from django.db import connection

    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    rows = [{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(3)]
    assert import_preferences(_jsonl(tmp_path / "in.jsonl", rows)).created == 3
    assert sorted((lb.pair.prompt.text, lb.pair.response_a.text, lb.choice) for lb in Label.objects.all()) == [
        (f"Q{i}?", f"yes {i}", "a") for i in range(3)]


def test_the_command_lists_every_bad_row_a_line_each_up_to_twenty(tmp_path):
    """Only the first problem and a count were shown: fixing a file took one run per bad row."""
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}] + [{"prompt": ""}] * 25)
    with pytest.raises(CommandError) as err:
        call_command("import_prompts", str(path))
    lines = str(err.value).splitlines()
    assert lines[:2] == ["p.jsonl: line 2: field 'prompt': empty", "p.jsonl: line 3: field 'prompt': empty"]
    assert len(lines) == 21 and lines[-1] == "... and 5 more problems" and not Prompt.objects.exists()


def test_csv_lines_count_the_header(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,note\nfirst,\n\"\",why is this empty\n")
    with pytest.raises(ImportProblem, match=r"p.csv: line 3: field 'prompt': empty"):
        import_prompts(tmp_path / "p.csv")


def test_csv_lines_are_where_a_row_starts_past_multi_line_cells_and_blank_lines(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_bytes(b'prompt,chosen,rejected\r\n"Two\r\nlines?",yes,no\r\n\r\nthird?,"a\nb\nc",x\r\n"",y,x\r\n')
    with pytest.raises(ImportProblem) as err:
        import_preferences(path)
    assert str(err.value) == "prefs.csv: line 8: field 'prompt': empty"  # a data frame counted it row 4
    path.write_bytes(path.read_bytes().replace(b'"",y,x', b'fine?,y,x'))
    import_preferences(path)
    assert Prompt.objects.get(text="Two\r\nlines?") and Response.objects.filter(text="a\nb\nc").exists()


def test_a_spreadsheets_csv_with_stray_empty_columns_and_rows_imports(tmp_path):
    (tmp_path / "sheet.csv").write_bytes(b"prompt,chosen,rejected,,\r\nq1?,a,b,,\r\n\t\r\n,,,,\r\nq2?,a,b,\r\n")
    result = import_preferences(tmp_path / "sheet.csv")
    assert result.created == 2 and sorted(Prompt.objects.values_list("text", flat=True)) == ["q1?", "q2?"]


@pytest.mark.parametrize(("content", "expected"), [
    (b'prompt,chosen,rejected\nq?,"unclosed\nmore,x\n', "p.csv: line 2: not valid CSV (unexpected end of data)"),
    (b"prompt,chosen,rejected\nq?,a,b\nq2?,a,b,c\n", "p.csv: line 3: 4 cells, but the header names 3 columns"),
    (b"prompt,chosen,chosen\nq?,a,b\n", "p.csv: line 1: column 'chosen' is named twice in the header"),
    (b"\n\n", "p.csv: no header line: expected the first line to name the columns"),
    (b"prompt,chosen,rejected\n\xff,a,b\n",
     "p.csv: line 2: not UTF-8 text (byte 24 of the file is b'\\xff'): save the file as UTF-8"),
    (b"\xef\xbb\xbfprompt,chosen,rejected\nq?,a,b\nq2?,caf\xe9,b\n",  # after a byte-order mark: Latin-1's e-acute
     "p.csv: line 3: not UTF-8 text (byte 41 of the file is b'\\xe9'): save the file as UTF-8"),
    (b"prompt ,chosen, prompt\nq?,a,b\n", "p.csv: line 1: column 'prompt' is named twice in the header"),
    (b"prompt,chosen,rejected\rq?,\xff,b\r",  # lines ended by a lone CR, as old Mac files are: counted as lines
     "p.csv: line 2: not UTF-8 text (byte 27 of the file is b'\\xff'): save the file as UTF-8"),
])
def test_a_broken_csv_names_the_line_and_stores_nothing(tmp_path, content, expected):
    (tmp_path / "p.csv").write_bytes(content)
    with pytest.raises(ImportProblem) as err:
        import_preferences(tmp_path / "p.csv")
    assert str(err.value) == expected
    assert not Pair.objects.exists() and not Prompt.objects.exists()


def test_a_file_of_one_indented_json_object_is_read_as_its_row(tmp_path):
    """A .json file of one object written with indent gave five problems ("line 1: not valid JSON"...): valid JSON,
    just not one object a line. It is its one row; a second object after it is still an error, by line."""
    row = {"prompt": "q?", "chosen": "a", "rejected": "b"}
    (tmp_path / "one.json").write_text("\n" + json.dumps(row, indent=2) + "\n", encoding="utf-8")
    assert import_preferences(tmp_path / "one.json").created == 1
    (tmp_path / "two.json").write_text(json.dumps(row, indent=2) + "\n" + json.dumps(row, indent=2), encoding="utf-8")
    with pytest.raises(ImportProblem, match=r"two.json: line 1: not valid JSON"):
        import_preferences(tmp_path / "two.json")


def test_a_key_given_twice_in_one_object_is_refused_by_line(tmp_path):
    """{"prompt": "first", "prompt": "second"} stored "second" without a word (json keeps the last value)."""
    good = '{"prompt": "q", "chosen": "a", "rejected": "b"}'
    twice = '{"prompt": "first", "chosen": "a", "rejected": "b", "prompt": "second"}'
    cases = [("p.jsonl", f"{good}\n{twice}\n", "p.jsonl: line 2: the key 'prompt' is given twice in one object"),
             ("p.json", f"[{good},\n\n {twice}]", "p.json: line 3: the key 'prompt' is given twice in one object"),
             ("p.csv", 'prompt,chosen,rejected\n"[{""role"": ""user"", ""role"": ""assistant"", ""content"": ""hi""}]",a,b\n',
              "p.csv: line 2: field 'prompt': the key 'role' is given twice in one object")]
    for file_name, text, problem in cases:
        (tmp_path / file_name).write_text(text, encoding="utf-8")
        with pytest.raises(ImportProblem) as refused:
            import_preferences(tmp_path / file_name)
        assert str(refused.value).startswith(problem), str(refused.value)
    assert not Prompt.objects.exists()


def test_a_header_with_spaces_around_its_names_reads_as_the_names(tmp_path):
    """"prompt ,chosen,rejected" (a space typed after a name) was refused with "cannot tell the format"."""
    (tmp_path / "p.csv").write_bytes(b"prompt , chosen,rejected\nq?,a,b\n")
    assert import_preferences(tmp_path / "p.csv").created == 1


def test_the_command_exits_non_zero_with_one_line_and_no_traceback(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": None}])
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", PREFLOOP_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "manage.py", "import_prompts", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "CommandError: bad.jsonl: line 2: field 'prompt': missing"


def test_unknown_file_type_is_refused(tmp_path):
    (tmp_path / "p.txt").write_text("prompt\nhi\n")
    with pytest.raises(CommandError, match=r"p.txt: unknown file type '.txt'"):
        call_command("import_prompts", str(tmp_path / "p.txt"))


def test_pairs_join_the_queue_once(tmp_path):
    rows = [{"prompt": "Say hi", "response_a": "hi", "response_b": "hello"},
            {"prompt": [{"role": "user", "content": "Add 2+2"}], "response_a": "4", "response_b": "5"}]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    call_command("import_pairs", str(path), round=2, labels_needed=3)
    call_command("import_pairs", str(path), round=2, labels_needed=3)
    assert Pair.objects.count() == 2 and Response.objects.count() == 4
    pair = Pair.objects.get(response_a__text="4")
    assert pair.origin == Pair.IMPORTED and pair.round.number == 2 and pair.labels_needed == 3
    assert pair.response_a.version is None and pair.labels_done == 0


def test_bad_pair_row_names_the_field(tmp_path):
    path = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "x", "response_a": "a", "response_b": "b"},
                                             {"prompt": "y", "response_a": "a"}])
    with pytest.raises(CommandError, match=r"^pairs.jsonl: line 2: field 'response_b': missing"):
        call_command("import_pairs", str(path))
    assert not Pair.objects.exists() and not Prompt.objects.exists()


def test_hh_rlhf_sample_imports_as_chats_with_labels_by_the_import_account():
    assert HH_SAMPLE.exists()
    call_command("import_preferences", str(HH_SAMPLE), format="hh")
    pairs = Pair.objects.count()
    assert 95 <= pairs <= 100  # the sample may repeat a row; repeats are skipped
    assert Label.objects.count() == pairs and set(Label.objects.values_list("choice", flat=True)) == {"a"}
    profile = AnnotatorProfile.objects.get(user__username="import")
    assert profile.is_import and not profile.is_automatic
    first = json.loads(HH_SAMPLE.read_text().splitlines()[0])
    pair = Pair.objects.select_related("prompt", "response_a").order_by("pk").first()
    assert pair.prompt.text.startswith("What are some aspects of religious Islam")
    assert first["chosen"].endswith(pair.response_a.text)
    assert pair.labels_done == pair.labels_needed == 1
    call_command("import_preferences", str(HH_SAMPLE))  # auto-detected, all already there
    assert Pair.objects.count() == pairs


def test_trl_string_and_conversational_and_implicit_prompt(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "preference_prob": 0.75},
        {"prompt": [{"role": "user", "content": "Capital of France?"}],
         "chosen": [{"role": "assistant", "content": "Paris"}], "rejected": [{"role": "assistant", "content": "Rome"}]},
        {"chosen": [{"role": "user", "content": "Colour of sky?"}, {"role": "assistant", "content": "Blue"}],
         "rejected": [{"role": "user", "content": "Colour of sky?"}, {"role": "assistant", "content": "Green"}]},
    ]
    result = import_preferences(_jsonl(tmp_path / "trl.jsonl", rows), fmt="auto")
    assert result.created == 3
    assert Label.objects.get(pair__response_a__text="4").preference_prob == 0.75
    assert Pair.objects.get(response_a__text="Blue").prompt.text == "Colour of sky?"


def test_ultrafeedback_binarised_parquet_with_scores(tmp_path):
    frame = pd.DataFrame([
        {"prompt": "Write a haiku", "prompt_id": "x1",
         "chosen": [{"role": "user", "content": "Write a haiku"}, {"role": "assistant", "content": "Leaves fall"}],
         "rejected": [{"role": "user", "content": "Write a haiku"}, {"role": "assistant", "content": "No."}],
         "score_chosen": 8.5, "score_rejected": 3.0},
        {"prompt": "Say yes", "prompt_id": "x2",
         "chosen": [{"role": "user", "content": "Say yes"}, {"role": "assistant", "content": "Yes"}],
         "rejected": [{"role": "user", "content": "Say yes"}, {"role": "assistant", "content": "Yes!"}],
         "score_chosen": 5.0, "score_rejected": 5.0},
    ])
    frame.to_parquet(tmp_path / "uf.parquet")
    call_command("import_preferences", str(tmp_path / "uf.parquet"), format="ultrafeedback")
    assert Label.objects.get(pair__response_a__text="Leaves fall").choice == "a"
    assert Label.objects.get(pair__response_a__text="Yes").choice == "tie"  # equal scores are a tie, kept apart


def test_multi_turn_hh_transcript_becomes_a_chat_prompt(tmp_path):
    dialogue = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke"
    rows = [{"chosen": dialogue + "\n\nAssistant: Why did the chicken cross the road?",
             "rejected": dialogue + "\n\nAssistant: No."}]
    call_command("import_preferences", str(_jsonl(tmp_path / "h.jsonl", rows)))
    pair = Pair.objects.select_related("prompt", "response_a", "response_b").get()
    assert pair.prompt.messages == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert pair.prompt.text == "Tell me a joke"
    assert (pair.response_a.text, pair.response_b.text) == ("Why did the chicken cross the road?", "No.")


def test_hh_row_whose_dialogues_differ_is_refused(tmp_path):
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: bye\n\nAssistant: ciao"}]
    with pytest.raises(CommandError, match=r"^h.jsonl: line 1: field 'rejected': the dialogue before"):
        call_command("import_preferences", str(_jsonl(tmp_path / "h.jsonl", rows)), format="hh")
    assert not Label.objects.exists()


def test_an_answer_that_is_a_json_array_is_text_outside_csv(tmp_path):
    """In JSON Lines a string is text: an answer written as a JSON array of objects was refused ("message 1 must be
    an object with 'role' and 'content'") or, when it looked like messages, turned into one."""
    listing = '[{"name": "Ann"}, {"name": "Bo"}]'
    looks_like_chat = '[{"role": "assistant", "content": "hi"}]'
    rows = [{"prompt": "List the names as JSON.", "chosen": listing, "rejected": "Ann, Bo"},
            {"prompt": "Show a message list.", "chosen": looks_like_chat, "rejected": "hi"}]
    assert import_preferences(_jsonl(tmp_path / "j.jsonl", rows)).created == 2
    assert Response.objects.filter(text=listing).exists() and Response.objects.filter(text=looks_like_chat).exists()
    pd.DataFrame(rows).to_parquet(tmp_path / "j.parquet")
    Pair.objects.all().delete(), Response.objects.all().delete()
    assert import_preferences(tmp_path / "j.parquet").created == 2
    assert Response.objects.filter(text=listing).exists()


def test_a_flag_is_not_a_preference_probability(tmp_path):
    row = {"prompt": "Q?", "chosen": "a", "rejected": "b", "preference_prob": True}
    with pytest.raises(ImportProblem, match="field 'preference_prob': expected a number between 0.5 and 1, got true"):
        import_preferences(_jsonl(tmp_path / "b.jsonl", [row]))
    assert not Pair.objects.exists()



def test_a_train_prompt_is_never_made_an_eval_prompt_by_an_import_and_the_lines_are_named(tmp_path):
    """Importing a file as eval prompts found the ones stored as train prompts, counted them "already present" and
    left them train: the eval set went without them, and their pairs were still trained on."""
    Prompt.objects.create(text="Name a colour.", split=Prompt.TRAIN)
    path = _jsonl(tmp_path / "e.jsonl", [{"prompt": "What is DPO?"}, {"prompt": "name a  colour."}])
    with pytest.raises(ImportProblem) as refused:
        import_prompts(path, split=Prompt.EVAL)
    assert refused.value.problems == [
        "e.jsonl: line 2: field 'prompt': stored already as a train prompt, whose answers may have been trained on, so "
        "it cannot be an eval prompt (eval prompts are never trained on)"]
    assert list(Prompt.objects.values_list("text", "split")) == [("Name a colour.", "train")]  # nothing stored
    # the other way: a train file's line whose prompt is an eval prompt is said, and the prompt stays eval
    result = import_prompts(_jsonl(tmp_path / "t.jsonl", [{"prompt": "What is DPO?"}]), split=Prompt.EVAL)
    assert result.created == 1
    result = import_prompts(_jsonl(tmp_path / "t2.jsonl", [{"prompt": "Why?"}, {"prompt": "what is dpo?"}]))
    assert (result.created, result.skipped, result.set_aside) == (1, 0, (2,))
    assert "set aside because their prompt is an eval prompt" in str(result)
    assert Prompt.objects.get(text="What is DPO?").split == Prompt.EVAL


@pytest.mark.parametrize("row, problem", [
    # a role that is a list or an object: TypeError (unhashable) and a 500 from the API, with no line named
    ({"prompt": [{"role": ["user"], "content": "x"}], "chosen": "a", "rejected": "b"},
     "field 'prompt': message 1 has role ['user']: expected system, user or assistant"),
    ({"prompt": [{"role": {"r": 1}, "content": "x"}], "chosen": "a", "rejected": "b"},
     "field 'prompt': message 1 has role {'r': 1}: expected system, user or assistant"),
    # empty prompts, refused as an empty text prompt is, where they were stored as ''
    ({"prompt": [{"role": "user", "content": "  "}], "chosen": "a", "rejected": "b"},
     "field 'prompt': the last user message is empty"),
    ({"chosen": "\n\nHuman: \n\nAssistant: hi", "rejected": "\n\nHuman: \n\nAssistant: ho"},
     "field 'chosen': the last Human turn is empty"),
    # a null prompt was blamed on 'chosen' ("expected a non-empty list of messages")
    ({"prompt": None, "chosen": "a", "rejected": "b"}, "field 'prompt': missing"),
    # UltraFeedback rows skipped the prompt's checks: a blank prompt was stored, the rejected answer's chat was
    # never compared with the chosen one's, and a chosen answer scored below the rejected one was taken as the winner
    ({"chosen": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "b"}],
      "score_chosen": 2, "score_rejected": 1}, "field 'chosen': the last user message is empty"),
    ({"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "b"}],
      "score_chosen": 2, "score_rejected": 1}, "field 'rejected': the conversation before the last answer differs"),
    ({"prompt": "Hi?", "chosen": "a", "rejected": "b", "score_chosen": 1, "score_rejected": 2},
     "field 'score_chosen': 1 is lower than score_rejected 2"),
    ({"prompt": "Hi?", "chosen": "a", "rejected": "b", "score_chosen": "nan", "score_rejected": 2},
     "field 'score_chosen': expected a finite number"),
])
def test_a_malformed_chat_is_refused_by_line_and_field(tmp_path, row, problem):
    with pytest.raises(CommandError) as refused:
        call_command("import_preferences", str(_jsonl(tmp_path / "m.jsonl", [{"prompt": "fine", "chosen": "a",
                                                                              "rejected": "b"}, row])))
    assert str(refused.value).startswith(f"m.jsonl: line 2: {problem}")
    assert not Prompt.objects.exists()


def test_chat_cells_in_csv_read_as_json_indented_or_not_and_a_python_repr_is_refused(tmp_path):
    """pandas' to_csv writes a list of dicts as Python's repr ([{'role': ...}]), and indented JSON starts "[\\n {":
    both were stored as the prompt's text, the brackets and keys with it."""
    chat = [{"role": "user", "content": "Name a tree."}]
    frame = pd.DataFrame({"prompt": [json.dumps(chat, indent=1)], "chosen": ["An oak."], "rejected": ["A rock."]})
    frame.to_csv(tmp_path / "indented.csv", index=False)
    call_command("import_preferences", str(tmp_path / "indented.csv"))
    assert list(Prompt.objects.values_list("text", flat=True)) == ["Name a tree."]
    pd.DataFrame({"prompt": [chat], "chosen": ["An oak."], "rejected": ["A rock."]}).to_csv(tmp_path / "repr.csv",
                                                                                          index=False)
    with pytest.raises(CommandError, match=r"^repr.csv: line 2: field 'prompt': a message list written as a Python"):
        call_command("import_preferences", str(tmp_path / "repr.csv"))
    assert Prompt.objects.count() == 1


def test_a_json_array_files_syntax_error_names_its_line_in_the_file(tmp_path):
    """The blank lines before the array were stripped before parsing, and the error's line counted from there."""
    (tmp_path / "a.json").write_text('\n\n\n[\n {"prompt": "one?"},\n {"prompt": "two?",}\n]\n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"^a.json: line 6: not valid JSON"):
        call_command("import_prompts", str(tmp_path / "a.json"))


def test_a_row_of_an_indented_json_array_is_named_by_its_line_in_the_file(tmp_path):
    """An error in a JSON array's object named the object's position as its line: in an indented file (json.dump
    with indent, as most tools write one) "line 2" was the second object, on line 7, and an editor went to line 2."""
    rows = [{"prompt": "one?", "chosen": "a", "rejected": "b"}, {"prompt": "two?", "chosen": 3, "rejected": "b"}]
    (tmp_path / "a.json").write_text("\n" + json.dumps(rows, indent=2), encoding="utf-8")
    with pytest.raises(CommandError, match=r"^a.json: line 8: field 'chosen'"):
        call_command("import_preferences", str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('[{"prompt": "one?", "chosen": "a", "rejected": "b"},\n 7]', encoding="utf-8")
    with pytest.raises(CommandError, match=r"^b.json: line 2: expected a JSON object"):
        call_command("import_preferences", str(tmp_path / "b.json"))
    for bad, line in (('[{"prompt": "p"}\n {"prompt": "q"}]', 2), ('[{"prompt": "p"}]\n\n]', 3), ("[\n", 2),
                      ('[{"prompt": "p"},\n]', 2)):
        (tmp_path / "c.json").write_text(bad, encoding="utf-8")
        with pytest.raises(CommandError, match=rf"^c.json: line {line}: not valid JSON"):
            call_command("import_prompts", str(tmp_path / "c.json"))
    # JSON Lines whose first line is an array: that line is the bad row, not the fine one after it ("Extra data")
    (tmp_path / "e.jsonl").write_text('[{"prompt": "p"}]\n{"prompt": "q"}\n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"^e.jsonl: line 1: expected a JSON object with named fields$"):
        call_command("import_prompts", str(tmp_path / "e.jsonl"))
    (tmp_path / "d.json").write_text('  [ ]  \n', encoding="utf-8")
    with pytest.raises(CommandError, match=r"^d.json: no rows"):  # read, and said, as an empty JSONL file is
        call_command("import_prompts", str(tmp_path / "d.json"))
    assert not Prompt.objects.exists()


def test_a_persons_account_named_import_is_never_taken_for_imported_labels(tmp_path, django_user_model):
    """The probe's attack: an account named "import" (a person's, with a password) labels a pair; an import of the
    other answer found that account by name, marked it the import account, and called the person's label "the label
    already imported": their labels then counted as imported, and the file's row was dropped as disagreeing."""
    from annotate.importers import IMPORT_FALLBACK_ACCOUNT, import_account, import_preferences
    from annotate.models import AnnotatorProfile
    from annotate.services import label_pair
    from tests.annotate.factories import make_pair

    person = django_user_model.objects.create_user("import", password="pw-import-123")
    AnnotatorProfile.objects.create(user=person, is_import=True)  # as an earlier version marked it
    pair = make_pair()
    label_pair(pair.pk, person, "left")
    person_choice = Label.objects.get(annotator=person).choice
    chosen, rejected = (pair.response_b, pair.response_a) if person_choice == "a" else (pair.response_a, pair.response_b)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": pair.prompt.text, "chosen": chosen.text,
                                                  "rejected": rejected.text}) + "\n")
    result = import_preferences(tmp_path / "p.jsonl")
    assert result.created == 1 and not result.disagreeing
    account = import_account()
    assert account.username == IMPORT_FALLBACK_ACCOUNT and not account.has_usable_password()
    assert not AnnotatorProfile.objects.filter(user=person, is_import=True).exists()
    assert Label.objects.get(annotator=person).choice == person_choice  # the person's label is theirs still
    assert Label.objects.get(annotator=account).choice != person_choice
    person.refresh_from_db()
    assert person.check_password("pw-import-123")


def test_unlabelled_pairs_are_not_imported_into_a_closed_round(tmp_path):
    """A closed round serves no one, and its open count kept the imported pairs for ever."""
    from annotate.closing import close_round
    from annotate.importers import import_pairs

    close_round(LabellingRound.objects.create(number=3), "enough labels")
    path = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q?", "response_a": "a", "response_b": "b"}])
    with pytest.raises(ImportProblem, match=r"^round 3: its labelling closed \(enough labels\), so no one would be "):
        import_pairs(path, round_number=3)
    assert not Pair.objects.exists() and not Prompt.objects.exists()
    assert import_pairs(path, round_number=4).created == 1  # an open round takes them


def test_prompts_that_differ_in_a_compatibility_form_stay_apart_with_their_answers(tmp_path):
    """Unicode compatibility forms were folded into a prompt's identity (NFKC): "What is 2³?" and "What is 23?" were
    one prompt, stored with the last row's wording, and an import gave one row's answers to the other's text (found
    by an outside review). Case, spacing and how accents are composed still make one prompt, stored as its first row
    words it."""
    from annotate.exporters import export_preferences

    rows = [{"prompt": "What is 2³?", "chosen": "8", "rejected": "6"},
            {"prompt": "What is 23?", "chosen": "Twenty-three.", "rejected": "Five."},
            {"prompt": "e\u0301te\u0301?", "chosen": "summer", "rejected": "winter"},
            {"prompt": "\u00c9T\u00c9?", "chosen": "summer", "rejected": "spring"}]
    result = import_preferences(_jsonl(tmp_path / "p.jsonl", rows))
    assert result.created == 4 and Prompt.objects.count() == 3
    assert Prompt.objects.filter(text="e\u0301te\u0301?").exists()  # the first row's wording of the one prompt
    out = tmp_path / "out.jsonl"
    export_preferences(out)
    exported = {(r["prompt"], r["chosen"]) for r in map(json.loads, out.read_text().splitlines())}
    assert {("What is 2³?", "8"), ("What is 23?", "Twenty-three.")} <= exported


@pytest.mark.slow
def test_stored_prompts_take_the_hash_that_keeps_compatibility_forms(transactional_db):
    """Migration generation/0010: a prompt stored under the folding hash is found by its own text again."""
    import hashlib
    import unicodedata

    from tests.migrating import models_as_of

    folded = hashlib.sha256(unicodedata.normalize("NFKC", "What is 2³?").casefold().encode()).hexdigest()
    with models_as_of([("generation", "0009_prompt_hash_from_text")]) as old:
        old.get_model("generation", "Prompt").objects.create(text="What is 2³?", hash=folded)
    assert Prompt.objects.get().hash == normalised_hash("What is 2³?") != folded
