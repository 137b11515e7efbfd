"""The training command line's --out, and Ctrl-C (found by an outside review): a folder already holding a model was
written over without a word, a file named as --out failed the run only after its last step with an error that named
no flag, and Ctrl-C printed a traceback."""
from __future__ import annotations

import json
from pathlib import Path

from training.dpo import train


def _args(model, data, out) -> list[str]:
    return ["--model", str(model), "--data", str(data), "--out", str(out), "--dtype", "float32", "--epochs", "1"]


def _data(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q{i}", "chosen": "Thank you!", "rejected": "No."})
                              for i in range(2)))
    return data


def test_an_out_that_is_a_file_or_a_folder_holding_something_is_refused_before_training(tiny_model_dir, tmp_path,
                                                                                       capsys, monkeypatch):
    import training.dpo.trainer as trainer

    def no_training(*args, **kwargs):
        raise AssertionError("trained before --out was checked")

    monkeypatch.setattr(trainer, "train_dpo", no_training)
    data = _data(tmp_path)
    a_file = tmp_path / "outfile"
    a_file.write_text("keep")
    kept = tmp_path / "previous"
    kept.mkdir()
    (kept / "model.safetensors").write_bytes(b"the weights of an earlier run")
    for out, said in ((a_file, "is a file"), (kept, "the folder is not empty"), (a_file / "model", "is a file")):
        assert train.main(_args(tiny_model_dir, data, out)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out}: ") and said in err and "Traceback" not in err
    assert a_file.read_text() == "keep" and (kept / "model.safetensors").read_bytes() == b"the weights of an earlier run"


def test_an_empty_out_folder_is_taken(tiny_model_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()  # as the training service's launcher makes it (tempfile.mkdtemp)
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out)) == 0
    assert (out / "config.json").is_file()


def test_ctrl_c_ends_the_command_with_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import training.dpo.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_dpo", interrupted)
    assert train.main(_args(tiny_model_dir, _data(tmp_path), tmp_path / "out")) == 130
    err = capsys.readouterr().err
    assert "error: interrupted: nothing was saved" in err and "Traceback" not in err


def test_a_save_that_fails_part_way_leaves_no_model_folder(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The model was written in place, so a save stopped part way (a full disk, Ctrl-C) left a folder with the
    weights and no tokenizer that looked like a model; now it is written whole or not at all."""
    from transformers import PreTrainedTokenizerBase

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
    out = tmp_path / "out"
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]

    def stopped(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", stopped)
    out.mkdir()  # an empty folder named as --out stays as it was
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out)) == 130
    assert "error: interrupted: nothing was saved" in capsys.readouterr().err
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.jsonl"]
    monkeypatch.undo()
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out)) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()


def test_a_model_folder_whose_config_is_not_a_model_configuration_is_named_by_its_flag(tiny_model_dir, tmp_path,
                                                                                    capsys):
    """A config.json that is not JSON (or not an object) was reported in transformers' words after torch had loaded,
    naming no flag (found by an outside review)."""
    import shutil

    data = _data(tmp_path)
    for text, said in (("{not json", "config.json:1: not valid JSON"), ("[1, 2]", "not a model's configuration"),
                       ('{"model_type": 3}', "not a model's configuration")):
        broken = tmp_path / "broken"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(tiny_model_dir, broken)
        (broken / "config.json").write_text(text)
        for flag, args in (("--model", _args(broken, data, tmp_path / "out")),
                           ("--reference", [*_args(tiny_model_dir, data, tmp_path / "out"), "--reference", str(broken)])):
            assert train.main(args) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: {flag} {broken}") and said in err and "Traceback" not in err, err


def test_a_prompt_length_given_at_or_above_the_length_is_refused_not_lowered(tiny_model_dir, tmp_path, capsys):
    """--max-prompt-length given at or above --max-length was lowered without a word, so the run trained on settings
    no one gave; left at its default it is still lowered to make room, as the form does."""
    out = tmp_path / "out"
    args = [*_args(tiny_model_dir, _data(tmp_path), out), "--max-length", "64"]
    assert train.main([*args, "--max-prompt-length", "64"]) == 2
    assert "error: --max-prompt-length 64: must be less than --max-length 64" in capsys.readouterr().err
    assert not out.exists()
    config = train.config_from_args(train.parse_args(args))
    assert (config.max_length, config.max_prompt_length) == (64, 63)


def test_an_out_that_is_a_link_to_an_empty_folder_gets_the_model(tiny_model_dir, tmp_path):
    """The save went to a hidden folder beside --out, renamed onto it once whole: a link to a folder (or a mount
    point) cannot be renamed onto, and the trained model was deleted with the hidden folder (found by a review of
    the change). It is written inside --out now, its config last."""
    import os

    target = tmp_path / "volume"
    target.mkdir()
    link = tmp_path / "out"
    link.symlink_to(target)
    assert train.main(_args(tiny_model_dir, _data(tmp_path), link)) == 0
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no part-written folder left
    made = tmp_path / "new"
    assert train.main(_args(tiny_model_dir, _data(tmp_path), made)) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert made.stat().st_mode & 0o777 == 0o777 & ~umask  # readable as any folder made, not 0700


def test_ctrl_c_after_a_lora_adapter_was_saved_says_so(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import training.dpo.trainer as trainer

    def saved_then_interrupted(config, model, pairs, out, **kwargs):
        (Path(out) / "adapter_config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_dpo", saved_then_interrupted)
    out = tmp_path / "out"
    out.mkdir()
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out)) == 130
    assert f"error: interrupted after the model was saved in {out}" in capsys.readouterr().err


def test_a_data_file_that_is_not_there_is_named_by_its_flag(tiny_model_dir, tmp_path, capsys):
    """The OS's "No such file or directory: '...'" named no flag (an outside review)."""
    assert train.main(_args(tiny_model_dir, tmp_path / "nowhere.jsonl", tmp_path / "out")) == 2
    assert f"error: --data {tmp_path / 'nowhere.jsonl'}: no such file" in capsys.readouterr().err
    assert train.main(_args(tiny_model_dir, tmp_path, tmp_path / "out")) == 2
    assert f"error: --data {tmp_path}: a folder, not a file" in capsys.readouterr().err


def test_data_read_from_a_pipe_is_taken(tiny_model_dir, tmp_path):
    """The check for a missing --data refused a pipe (/dev/stdin) as "no such file", which the reader reads."""
    import subprocess
    import sys

    rows = _data(tmp_path).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "training.dpo.train", *_args(tiny_model_dir, "/dev/stdin",
                                                                             tmp_path / "out")],
                          input=rows, capture_output=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert (tmp_path / "out" / "config.json").exists()
