"""The training command line's inputs, from an outside probe (7 December 2026): a --result naming the --data file (or
any file there) replaced it with the report, and one inside --out replaced the trained weights; an integer past a
float's range as a cached reference log-prob, and a permitted loss term that raised, ended in a traceback; a file
name the shell could not decode as UTF-8 was refused only when the model was saved, after the whole run, naming no
flag; a --config that is not there named no flag either."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from training.dpo import train


def _args(model, data, out, *more) -> list[str]:
    return ["--model", str(model), "--data", str(data), "--out", str(out), "--dtype", "float32", "--epochs", "1", *more]


ROWS = "".join(json.dumps({"prompt": f"Q{i}", "chosen": "Thank you!", "rejected": "No."}) + "\n" for i in range(2))


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text(ROWS)
    return data


def _undecodable(folder: Path, name: bytes) -> str:
    """A path whose last name is bytes that are not UTF-8, as Python hands such a command-line argument on."""
    return os.fsdecode(os.fsencode(str(folder)) + b"/" + name)


def _failing_import(monkeypatch, exc: BaseException) -> None:
    """Importing the trainer (and so torch, transformers) raises `exc`, as Ctrl-C or a broken install does while
    they load: it is dropped from sys.modules so that train.main imports it again, through this finder."""
    import importlib.abc
    import sys

    class Failing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "training.dpo.trainer":
                raise exc
            return None

    monkeypatch.delitem(sys.modules, "training.dpo.trainer", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Failing(), *sys.meta_path])


@pytest.fixture
def config_only_model(tmp_path) -> Path:
    """A model folder that passes the checks made before the trainer is imported, with no weights to load."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    return model


def test_a_result_naming_an_existing_file_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    data = _data(tmp_path)
    out = tmp_path / "out"
    assert train.main(_args(tiny_model_dir, data, out, "--result", str(data))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --result {data}: the file exists (it would be written over)")
    assert data.read_text() == ROWS and not out.exists()  # the data kept, nothing trained


def test_a_result_inside_out_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    for inside in (out / "model.safetensors", out / "sub" / "result.json"):
        assert train.main(_args(tiny_model_dir, _data(tmp_path), out, "--result", str(inside))) == 2
        assert f"error: --result {inside}: inside --out {out}" in capsys.readouterr().err
    assert not out.exists()


def test_an_empty_result_file_is_written_and_the_model_is_whole(tiny_model_dir, tmp_path, capsys):
    """As a caller makes one (mktemp): an empty file holds nothing to lose."""
    result, out = tmp_path / "result.json", tmp_path / "out"
    result.touch()
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out, "--result", str(result))) == 0
    assert json.loads(result.read_text())["pairs"] == 2
    assert not (out / "model.safetensors").read_bytes().startswith(b"{")


def test_a_result_file_that_comes_during_the_run_is_not_written_over(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import training.dpo.trainer as trainer

    result = tmp_path / "result.json"
    real = trainer.train_dpo

    def and_someone_writes_the_file(*args, **kwargs):
        done = real(*args, **kwargs)
        result.write_text("another program's")
        return done

    monkeypatch.setattr(trainer, "train_dpo", and_someone_writes_the_file)
    assert train.main(_args(tiny_model_dir, _data(tmp_path), tmp_path / "out", "--result", str(result))) == 2
    assert f"error: --result {result}: the file exists (it would be written over), which it was not when the run " \
           "began; the report is not written" in capsys.readouterr().err
    assert result.read_text() == "another program's"


def test_a_reference_logp_past_a_floats_range_is_an_error_naming_line_and_field(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(ROWS + '{"prompt": "x", "chosen": "a", "rejected": "b", "ref_chosen_logp": -' + "9" * 400
                    + ', "ref_rejected_logp": -1}\n')
    assert train.main(_args(tiny_model_dir, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{data}:3: field 'ref_chosen_logp': expected a finite log-probability (0 or below), got a negative " \
           "integer of 400 digits" in err


def test_file_names_the_model_libraries_cannot_take_are_refused_naming_the_flag_before_training(tiny_model_dir,
                                                                                              tmp_path, capsys):
    model = _undecodable(tmp_path, b"model\xfd")
    shutil.copytree(tiny_model_dir, model)
    data = _data(tmp_path)
    for args, flag in ((_args(tiny_model_dir, data, _undecodable(tmp_path, b"out\xfe")), "--out"),
                       (_args(model, data, tmp_path / "out"), "--model"),
                       (_args(tiny_model_dir, data, tmp_path / "out", "--reference", model), "--reference")):
        assert train.main(args) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {flag} holds bytes that are not UTF-8 text")
        assert '"step"' not in captured.out  # said before training, not after the whole run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model\udcfd", "pairs.jsonl"]


def test_data_and_result_names_that_are_not_utf8_are_read_and_written(tiny_model_dir, tmp_path, capsys):
    """This program reads --data and writes --result itself, and takes such names (they trained before the check)."""
    data = Path(_undecodable(tmp_path, b"pairs\xe9.jsonl"))
    data.write_text(ROWS)
    result = Path(_undecodable(tmp_path, b"r\xe9sultat.json"))
    assert train.main(_args(tiny_model_dir, data, tmp_path / "out", "--result", str(result))) == 0
    assert json.loads(result.read_text())["pairs"] == 2


def test_a_result_under_a_file_equal_to_out_or_holding_it_or_special_is_refused_naming_it(tiny_model_dir, tmp_path,
                                                                                         capsys):
    data = _data(tmp_path)
    out = tmp_path / "out"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "empty").touch()
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "empty")
    for result, said in ((data / "r.json", f"{data} is a file, not a folder"),
                         (out, f"is --out {out}, which holds the model only"),
                         (out.parent, "is a folder"),
                         (fifo, "not a regular file (a device, a pipe or a socket): name a new file"),
                         (Path("/dev/null"), "not a regular file (a device, a pipe or a socket): name a new file"),
                         (link, "a link (the report would replace it): name a new file")):
        assert train.main(_args(tiny_model_dir, data, out, "--result", str(result))) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --result {result}: ") and said in err, err
    assert train.main(_args(tiny_model_dir, data, tmp_path / "r.json" / "model", "--result", str(tmp_path / "r.json"))) == 2
    assert f"--out {tmp_path / 'r.json' / 'model'} is inside it" in capsys.readouterr().err
    assert not out.exists() and data.read_text() == ROWS


def test_a_config_file_that_is_not_there_or_a_folder_names_the_flag(tiny_model_dir, tmp_path, capsys):
    data = _data(tmp_path)
    for config, said in ((tmp_path / "nope.json", "No such file or directory"), (tmp_path, "a folder, not a file")):
        assert train.main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out"),
                           "--config", str(config)]) == 2
        assert capsys.readouterr().err.strip() == f"error: --config {config}: {said}"


def test_a_model_that_is_a_file_is_said_so(tiny_model_dir, tmp_path, capsys):
    data = _data(tmp_path)
    assert train.main(_args(data, data, tmp_path / "out")) == 2
    assert capsys.readouterr().err.strip() == f"error: --model {data}: a file, not a model directory"


def test_a_permitted_loss_term_that_fails_is_one_line_naming_it_and_nothing_is_saved(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    for term, said in (("json:dumps", "loss term dumps failed on a training batch: TypeError: "),
                       ("builtins:len", "loss term len failed on a training batch: TypeError: ")):
        assert train.main(_args(tiny_model_dir, _data(tmp_path), out, "--allow-term", term, "--loss-terms", term)) == 2
        err = capsys.readouterr().err
        assert f"\nerror: {said}" in err and "Traceback" not in err  # after the progress bars
        assert not out.exists()
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out, "--allow-term", "builtins:repr",
                            "--loss-terms", "builtins:repr")) == 2
    assert "error: loss term repr returned str, not a TermResult" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_or_result_where_nothing_can_be_made_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    """From an outside probe: access() says /proc is writable, and --out /proc/o trained the whole run, then failed
    to save it in the OS's words, naming no flag (--result there lost the report the same way)."""
    out = tmp_path / "out"
    assert train.main(_args(tiny_model_dir, _data(tmp_path), "/proc/prefloop-out")) == 2
    assert capsys.readouterr().err == "error: --out /proc/prefloop-out: cannot be made there (No such file or directory)\n"
    assert train.main(_args(tiny_model_dir, _data(tmp_path), out, "--result", "/proc/prefloop-result.json")) == 2
    err = capsys.readouterr().err
    assert err == "error: --result /proc/prefloop-result.json: cannot be made there (No such file or directory)\n"
    assert not out.exists()


def test_an_out_that_is_a_link_to_nowhere_is_refused_before_training(tiny_model_dir, tmp_path, capsys):
    """It trained the whole run and then failed to make the folder ("File exists"); the link is left as it was."""
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    assert train.main(_args(tiny_model_dir, _data(tmp_path), link)) == 2
    assert capsys.readouterr().err == f"error: --out {link}: a link to {tmp_path / 'gone'}, which is not there\n"
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_checking_that_out_and_result_can_be_made_leaves_nothing(tmp_path):
    out, result = tmp_path / "a" / "b" / "out", tmp_path / "c" / "result.json"
    train.check_out_dir(str(out))
    train.check_result_path(str(result), str(out))
    assert list(tmp_path.iterdir()) == []


def test_a_negative_learning_rate_in_scientific_notation_is_refused_as_out_of_range(tmp_path, capsys):
    """From an outside probe: argparse read `--lr -1e-5` as a flag ("expected one argument"), not the value."""
    assert train.main(_args(tmp_path / "no-model", _data(tmp_path), tmp_path / "out", "--lr", "-1e-5")) == 2
    assert capsys.readouterr().err.startswith("error: DPOConfig.learning_rate=-1e-05: must be more than 0")


def test_a_stop_or_divergence_said_inside_a_term_stays_what_it_is():
    from training.dpo.outcome import TrainingCancelled, TrainingDiverged
    from training.dpo.terms import TermFailed, apply_term

    for kind in (TrainingCancelled, TrainingDiverged):
        def term(batch, kind=kind):
            raise kind("said inside the term")

        with pytest.raises(kind):
            apply_term(term, None)

    def broken(batch):
        raise KeyError("x")

    with pytest.raises(TermFailed, match=r"^loss term broken failed on a training batch: KeyError: 'x'$"):
        apply_term(broken, None)


def test_ctrl_c_while_torch_loads_is_one_line(config_only_model, tmp_path, monkeypatch, capsys):
    """From an outside probe: Ctrl-C in the seconds the trainer's imports (torch, transformers) take ended in a
    traceback through torch's modules."""
    _failing_import(monkeypatch, KeyboardInterrupt())
    assert train.main(_args(config_only_model, _data(tmp_path), tmp_path / "out")) == 130
    assert capsys.readouterr().err == "error: interrupted: nothing was saved\n"
    assert not (tmp_path / "out").exists()


def test_a_name_too_long_for_the_file_system_names_its_flag(tiny_model_dir, tmp_path, capsys):
    """From an outside probe: each was said in the OS's words alone, "[Errno 36] File name too long: '...'"."""
    long = str(tmp_path / ("a" * 300))
    data, out = _data(tmp_path), tmp_path / "out"
    for flag, argv in (("--config", _args(tiny_model_dir, data, out, "--config", long)[:6] + ["--config", long]),
                       ("--model", _args(long, data, out)),
                       ("--reference", _args(tiny_model_dir, data, out, "--reference", long)),
                       ("--result", _args(tiny_model_dir, data, out, "--result", long)),
                       ("--data", _args(tiny_model_dir, long, out)),
                       ("--out", _args(tiny_model_dir, data, long))):
        assert train.main(argv) == 2
        assert capsys.readouterr().err == f"error: {flag} {long}: File name too long\n"
    assert not out.exists()


def test_checking_an_out_or_result_below_a_link_to_nowhere_leaves_the_link(tmp_path):
    """Review of 75075fa: the check removed every missing name above --out it had tried to make, and a link to
    nowhere is a missing name: `--out link/model` refused the run and deleted the user's link `link`."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    for check, flag, target in ((lambda t: train.check_out_dir(t), "--out", link / "model"),
                                (lambda t: train.check_result_path(t, str(tmp_path / "o")), "--result",
                                 link / "r.json")):
        with pytest.raises(ValueError) as refused:
            check(str(target))
        assert str(refused.value) == f"{flag} {target}: {link} is a link to {tmp_path / 'gone'}, which is not there"
        assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_checking_a_result_leaves_a_file_another_process_wrote_meanwhile(tmp_path, monkeypatch):
    """Review of 75075fa: a --result written by another process between the check's look and its making (two runs
    given one report name) was removed by the check as its own: that process's report lost."""
    result = tmp_path / "r.json"
    touch = Path.touch

    def another_process_first(self, *args, **kwargs):
        if self == result:
            result.write_text('{"the other run": 1}')
        return touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", another_process_first)
    with pytest.raises(ValueError, match="File exists"):
        train.check_result_path(str(result), str(tmp_path / "out"))
    assert result.read_text() == '{"the other run": 1}'


@pytest.mark.parametrize("broken", [OSError("libcudnn.so.9: cannot open shared object file: No such file or directory"),
                                    ValueError("numpy.dtype size changed, may indicate binary incompatibility")])
def test_a_broken_install_found_while_torch_loads_is_not_said_as_bad_input(broken, config_only_model, tmp_path,
                                                                           monkeypatch):
    """Review of 3b55f4e: the trainer's imports moved under the handler for bad flags, so an install that fails to
    load (an OSError from a missing CUDA library, numpy's ValueError) exited 2, "bad input", in one line that named
    no flag and lost the traceback saying which library."""
    _failing_import(monkeypatch, broken)
    with pytest.raises(type(broken)):
        train.main(_args(config_only_model, _data(tmp_path), tmp_path / "out"))


def test_a_data_file_that_cannot_be_read_names_the_flag(tiny_model_dir, tmp_path, capsys):
    """Looked at, --data named its flag; read, an error of the OS was said in its words alone ("[Errno 5]
    Input/output error", of a file the kernel refuses to read: a review's note)."""
    out = tmp_path / "out"
    assert train.main(_args(tiny_model_dir, "/proc/self/mem", out)) == 2
    assert capsys.readouterr().err == "error: --data /proc/self/mem: Input/output error\n"
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_under_accelerate_launch_the_main_process_refuses_an_out_where_nothing_can_be_made(tiny_model_dir, tmp_path,
                                                                                           capsys, monkeypatch):
    """The check was skipped in every process of a launch (the same names made and removed by each at once), so
    `accelerate launch -m training.dpo.train --out /proc/o` trained the whole run before its save failed. The main
    process, which writes the model and the report, checks; the others leave the names alone."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert train.main(_args(tiny_model_dir, _data(tmp_path), "/proc/prefloop-out")) == 2
    assert capsys.readouterr().err == "error: --out /proc/prefloop-out: cannot be made there (No such file or directory)\n"
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match="which is not there"):
        train.check_out_dir(str(link))
    monkeypatch.setenv("RANK", "1")
    train.check_out_dir(str(tmp_path / "a" / "out"))  # not made, not removed: the main process's to try
    train.check_out_dir(str(link))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.jsonl"]
