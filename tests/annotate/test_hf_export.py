"""The hf export is a Hugging Face data set folder: Parquet shards and a dataset card that `datasets.load_dataset`
reads, and that TRL's DPOTrainer trains on as it is."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

from annotate.exporters import ExportError, export_preferences
from annotate.services import label_pair

from . import exporting
from .factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db
datasets = pytest.importorskip("datasets")
# Each load gets its own cache folder: `datasets` caches a folder's data by its name, so two tests' exports both
# called "prefs" could otherwise be served one another's rows.


def _decided(n: int, *, chat: bool = True, round_number: int = 1) -> None:
    round_ = make_round(round_number)
    for i in range(n):
        text = f"Question {i} of round {round_number}?"
        prompt = make_prompt(text=text, messages=[{"role": "user", "content": text}] if chat else None)
        pair = make_pair(prompt, f"A good answer {i}.", f"A bad answer {i}!", round=round_)
        label_pair(pair.pk, make_user(), "left")


def test_load_dataset_reads_the_folder_and_its_card(tmp_path):
    _decided(3, round_number=1)
    _decided(2, round_number=2)
    export = export_preferences(tmp_path / "prefs", fmt="hf", license="cc-by-4.0")
    assert export.rows == 5
    assert sorted(p.name for p in (export.path / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(str(export.path), cache_dir=str(tmp_path / "cache"))
    train = loaded["train"]
    assert train.num_rows == 5 and train[0]["chosen"] == [{"role": "assistant", "content": "A good answer 0."}]
    assert {"prompt", "chosen", "rejected", "preference_prob", "round", "annotator_ids"} <= set(train.column_names)
    card = (export.path / "README.md").read_text()
    assert 'license: "cc-by-4.0"' in card and "5 decided pairs" in card
    assert "| 1 | 3 |" in card and "| 2 | 2 |" in card and "`preference_prob`" in card


def test_shards_split_a_large_export(tmp_path, monkeypatch):
    from annotate import hf_dataset

    monkeypatch.setattr(hf_dataset, "SHARD_ROWS", 2)
    _decided(5, chat=False)
    export = export_preferences(tmp_path / "prefs", fmt="hf")
    assert len(list((export.path / "data").glob("train-*-of-00003.parquet"))) == 3
    train = datasets.load_dataset(str(export.path), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(train["chosen"]) == sorted(f"A good answer {i}." for i in range(5))


def test_an_empty_hf_export_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match="no decided pairs"):
        export_preferences(tmp_path / "empty", fmt="hf")  # `datasets` cannot load a data set of no rows
    assert not (tmp_path / "empty").exists()


def test_the_hf_export_never_overwrites(tmp_path):
    _decided(1)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "README.md").write_text("someone's card")
    export = export_preferences(taken, fmt="hf")  # a folder: the export goes inside it, under a new name
    assert export.path.parent == taken and (taken / "README.md").read_text() == "someone's card"
    someones = tmp_path / "notes.txt"
    someones.write_text("someone's notes")
    with pytest.raises(ExportError, match="already exists"):
        export_preferences(someones, fmt="hf")
    assert someones.read_text() == "someone's notes"
    with pytest.raises(Exception, match="--license"):
        call_command("export_preferences", str(tmp_path / "x"), format="hf", license="a\x00b")


@pytest.mark.slow
def test_trl_trains_one_dpo_step_on_the_loaded_export(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    _decided(4)
    export = export_preferences(tmp_path / "prefs", fmt="hf")
    train = datasets.load_dataset(str(export.path), split="train", cache_dir=str(tmp_path / "cache"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = [p.detach().clone() for p in policy.parameters()]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, max_steps=1, report_to="none",
                     use_cpu=True, save_strategy="no", learning_rate=1e-3, logging_steps=1)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=train, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss == pytest.approx(0.6931, abs=0.05)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, policy.parameters(), strict=True))


def test_the_export_page_downloads_the_hf_folder_zipped(client, staff, tmp_path):
    import io
    import zipfile

    _decided(2)
    client.force_login(staff)
    page = client.get("/annotate/export/")
    assert 'value="hf"' in page.content.decode()
    job, response = exporting.export(client, format="hf", license="mit")
    assert job.status == "succeeded" and response["Content-Disposition"].endswith('.zip"')
    zipfile.ZipFile(io.BytesIO(exporting.content(response))).extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    assert folder.name + ".zip" == job.file_name  # its top folder named like the download
    train = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert train.num_rows == 2 and 'license: "mit"' in (folder / "README.md").read_text()
    assert [p.name for p in Path(job.path).parent.iterdir()] == [job.file_name], "the data set folder is zipped away"
    make_round(9)
    job, empty = exporting.export(client, format="hf", round=9)
    assert job is None and empty.status_code == 400 and "No decided pairs" in empty.content.decode()


def test_the_cards_size_tag_is_one_the_hub_knows():
    """A million rows or more were tagged "n>1M", which is not one of the Hub's size tags (1M<n<10M is)."""
    from annotate.hf_dataset import size_category

    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 999_999, 1_000_000, 12_000_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "100K<n<1M", "1M<n<10M", "10M<n<100M", "n>1T"]
